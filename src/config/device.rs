//! Device names in config: "cpu" or "cuda:N".

use std::fmt;

/// Where a model's device lives, as parsed from `device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(i32),
}

impl Device {
    pub fn parse(text: &str) -> Option<Device> {
        if text == "cpu" {
            return Some(Device::Cpu);
        }
        let index = text.strip_prefix("cuda:")?.parse().ok()?;
        (index >= 0).then_some(Device::Cuda(index))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}
