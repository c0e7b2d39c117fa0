use aya::programs::{UProbe, RawTracePoint};
fn main() {
    let obj = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tokenmeter"));
    let mut ebpf = aya::Ebpf::load(obj).unwrap();
    for name in ["ssl_write","ssl_write_ex","ssl_read","ssl_read_ex","ssl_return","ssl_shutdown","ssl_free"] {
        let t = std::time::Instant::now();
        let p: &mut UProbe = ebpf.program_mut(name).unwrap().try_into().unwrap();
        match p.load() { Ok(_) => println!("{name} ok {:?}", t.elapsed()), Err(e) => println!("{name} ERR {e:?}") }
    }
    for name in ["sched_process_exec","sched_process_exit"] {
        let p: &mut RawTracePoint = ebpf.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap(); p.attach(name).unwrap(); println!("{name} ok");
    }
}
