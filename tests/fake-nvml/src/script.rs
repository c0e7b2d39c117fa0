//! A script file for a fake loaded by another process (the agent binary in an end-to-end
//! test), which cannot call the `fake_nvml_*` functions: named by `FAKE_NVML_SCRIPT`, read at
//! the first `nvmlInit` when no device was added yet. One directive per line, `#` comments:
//!
//! ```text
//! device <uuid> <mig: 0|1|2> <power_mw> <name, the rest of the line>
//! process <device index> <pid> <used memory bytes> <SM percent>
//! ```
//!
//! A scripted process runs steadily: each `nvmlDeviceGetProcessUtilization` size query (a null
//! buffer, as nvml-wrapper asks first) adds one sample per process at the current wall-clock
//! time with its SM percent, as the driver's sampling would have. A line that does not parse leaves the fake without devices, so that the
//! agent says it found none rather than measuring half a script.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::state::{Device, Mig, Process, Sample, State};

/// The environment variable naming the script.
pub const SCRIPT_VAR: &str = "FAKE_NVML_SCRIPT";

/// Loads the script into an empty state; returns the problem with the first bad line.
pub fn load_from_env(state: &mut State) -> Result<(), String> {
    let Some(path) = std::env::var_os(SCRIPT_VAR) else {
        return Ok(());
    };
    if !state.devices.is_empty() {
        return Ok(());
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.to_string_lossy()))?;
    let devices = parse(&text)?;
    state.devices = devices;
    Ok(())
}

fn parse(text: &str) -> Result<Vec<Device>, String> {
    let mut devices: Vec<Device> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let bad = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
        let mut words = line.splitn(5, char::is_whitespace);
        match words.next() {
            None | Some("") => {}
            Some("device") => {
                let (Some(uuid), Some(mig), Some(power), Some(name)) =
                    (words.next(), words.next(), words.next(), words.next())
                else {
                    return Err(bad("device <uuid> <mig> <power_mw> <name>"));
                };
                let mig = match mig {
                    "0" => Mig::Incapable,
                    "1" => Mig::Enabled,
                    "2" => Mig::Disabled,
                    _ => return Err(bad("mig is 0, 1 or 2")),
                };
                let power = power.parse().map_err(|_| bad("power_mw"))?;
                devices.push(Device::new(uuid.into(), name.trim().into(), mig, power));
            }
            Some("process") => {
                let numbers: Vec<u64> = words
                    .map(|w| w.trim().parse::<u64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad("process <device> <pid> <memory> <sm>"))?;
                let [device, pid, memory, sm] = numbers[..] else {
                    return Err(bad("process <device> <pid> <memory> <sm>"));
                };
                let device = devices
                    .get_mut(device as usize)
                    .ok_or_else(|| bad("no such device (yet)"))?;
                let pid = u32::try_from(pid).map_err(|_| bad("pid"))?;
                device.processes.push(Process {
                    pid,
                    used_memory: memory,
                });
                device.steady.push((pid, sm.min(100) as u32));
            }
            Some(_) => return Err(bad("unknown directive")),
        }
    }
    Ok(devices)
}

/// Adds the scripted processes' samples up to now (one per call, at the wall clock).
pub fn tick(device: &mut Device) {
    if device.steady.is_empty() {
        return;
    }
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    if device
        .samples
        .back()
        .is_some_and(|s| s.timestamp_us >= now_us)
    {
        return;
    }
    for i in 0..device.steady.len() {
        let (pid, sm) = device.steady[i];
        device.push_sample(Sample {
            pid,
            timestamp_us: now_us,
            sm,
            mem: 0,
            enc: 0,
            dec: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_steady_processes() {
        let devices = parse(
            "# a node\ndevice GPU-0 0 300000 NVIDIA H100 80GB HBM3\n\
             process 0 4242 1073741824 50 # the server\n",
        )
        .unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(devices[0].processes[0].pid, 4242);
        assert_eq!(devices[0].steady, vec![(4242, 50)]);
    }

    #[test]
    fn a_bad_line_is_named() {
        let error = parse("device GPU-0 0 300000 H100\nprocess 1 1 1 1\n").unwrap_err();
        assert!(error.starts_with("line 2: no such device"), "{error}");
        assert!(parse("gpu x\n").unwrap_err().contains("unknown directive"));
    }
}
