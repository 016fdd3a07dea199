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

impl<'de> serde::Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Device::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not a device: use \"cpu\" or \"cuda:N\""
            ))
        })
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
