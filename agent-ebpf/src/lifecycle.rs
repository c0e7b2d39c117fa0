//! Process exec and exit, and library loads, so the agent can probe new processes before
//! their first TLS call and forget dead ones. Only the thread group leader's exit is reported.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use tokenmeter_common::{
    counter, ControlEvent, CONTROL_EXEC, CONTROL_EXIT, CONTROL_LIBRARIES_CHANGED,
};

use crate::maps::{count, CONTROL_EVENTS};

#[inline(always)]
pub fn on_exec() {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    emit(pid, CONTROL_EXEC);
}

#[inline(always)]
pub fn on_exit() {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if pid == tid {
        emit(pid, CONTROL_EXIT);
    }
}

#[inline(always)]
pub fn on_libraries_changed() {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    emit(pid, CONTROL_LIBRARIES_CHANGED);
}

#[inline(always)]
fn emit(pid: u32, kind: u32) {
    let event = ControlEvent {
        // SAFETY: helper without preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        conn: 0,
        value: 0,
        pid,
        kind,
    };
    if CONTROL_EVENTS.output::<ControlEvent>(&event, 0).is_err() {
        count(counter::DROPPED_CONTROL, 1);
    }
}
