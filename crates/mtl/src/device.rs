//! Device names (`cpu`, `wgpu`, `libtorch`, `libtorch-cuda[:N]`) to Burn devices, among the
//! backends compiled in. The only place that constructs Burn's deprecated libtorch devices.

use burn::tensor::Device;

/// Names accepted by [`parse`].
pub const DEVICES: &str = "cpu, wgpu, libtorch, libtorch-cuda or libtorch-cuda:N";

/// A device name that is unknown or names a backend this build lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not a device name.
    #[error("unknown device {name:?}: expected one of {DEVICES}{}", hint(name))]
    Unknown {
        /// The name given.
        name: String,
    },
    /// A known device whose backend feature is off in this build.
    #[error("device {name} is not compiled in: rebuild with `--features {feature}`")]
    NotCompiled {
        /// The device.
        name: &'static str,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
}

/// What a name the user may have meant is called here.
fn hint(name: &str) -> &'static str {
    match name.trim().to_ascii_lowercase().as_str() {
        "gpu" => " (wgpu for any GPU through Vulkan, Metal or DX12; libtorch-cuda for CUDA)",
        "cuda" | "cuda:0" | "cuda:1" => " (libtorch-cuda[:N] for CUDA)",
        "mps" | "metal" | "vulkan" => " (wgpu)",
        _ => "",
    }
}

/// Whether `name` names the CPU (flex) device, as [`parse`] reads it (`cpu`, `flex`, any case).
pub fn is_cpu(name: &str) -> bool {
    matches!(name.trim().to_ascii_lowercase().as_str(), "cpu" | "flex")
}

/// Parses a device name into a Burn device, or explains which feature enables it.
pub fn parse(name: &str) -> Result<Device, DeviceError> {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "cpu" | "flex" => cpu(),
        "wgpu" => wgpu(),
        "libtorch" | "tch" | "libtorch-cpu" => libtorch(None),
        _ => match lower
            .strip_prefix("libtorch-cuda")
            .map(|r| r.trim_start_matches(':'))
        {
            Some("") => libtorch(Some(0)),
            Some(index) => match index.parse::<usize>() {
                Ok(i) => libtorch(Some(i)),
                Err(_) => Err(DeviceError::Unknown {
                    name: name.to_string(),
                }),
            },
            None => Err(DeviceError::Unknown {
                name: name.to_string(),
            }),
        },
    }
}

/// Parses a comma-separated list of device names (`cpu,cpu`, `libtorch-cuda:0,libtorch-cuda:1`)
/// for data-parallel training: one replica per name, the first the main device.
pub fn parse_list(names: &str) -> Result<Vec<Device>, DeviceError> {
    let names: Vec<&str> = names.split(',').map(str::trim).collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(DeviceError::Unknown {
            name: names.join(","),
        });
    }
    names.into_iter().map(parse).collect()
}

/// The devices `mtl train --device NAME` trains on: the CPU as
/// [`mtl_train::parallel::cpu_replicas`] data-parallel replicas for batches of `batch_size`,
/// any other device once.
pub fn training_devices(name: &str, batch_size: usize) -> Result<Vec<Device>, DeviceError> {
    let device = parse(name)?;
    let replicas = if is_cpu(name) {
        mtl_train::parallel::cpu_replicas(batch_size)
    } else {
        1
    };
    Ok(vec![device; replicas])
}

#[cfg(feature = "flex")]
fn cpu() -> Result<Device, DeviceError> {
    Ok(Device::flex())
}

#[cfg(not(feature = "flex"))]
fn cpu() -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled {
        name: "cpu",
        feature: "flex",
    })
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Device, DeviceError> {
    Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled {
        name: "wgpu",
        feature: "wgpu",
    })
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch is deprecated upstream; it stays our libtorch route.
fn libtorch(cuda: Option<usize>) -> Result<Device, DeviceError> {
    Ok(match cuda {
        None => Device::libtorch(),
        Some(i) => Device::libtorch_cuda(i),
    })
}

#[cfg(not(feature = "tch"))]
fn libtorch(cuda: Option<usize>) -> Result<Device, DeviceError> {
    let name = if cuda.is_some() {
        "libtorch-cuda"
    } else {
        "libtorch"
    };
    Err(DeviceError::NotCompiled {
        name,
        feature: "tch",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_or_explain() {
        assert!(is_cpu("cpu") && is_cpu(" Flex ") && !is_cpu("wgpu") && !is_cpu("libtorch"));
        assert!(matches!(parse("tpu"), Err(DeviceError::Unknown { .. })));
        // `gpu` names no backend: the error says which one is meant, instead of picking wgpu.
        assert_eq!(
            parse("gpu").expect_err("not a device").to_string(),
            format!(
                "unknown device \"gpu\": expected one of {DEVICES} (wgpu for any GPU through \
                 Vulkan, Metal or DX12; libtorch-cuda for CUDA)"
            )
        );
        assert!(matches!(
            parse("libtorch-cuda:x"),
            Err(DeviceError::Unknown { .. })
        ));
        #[cfg(feature = "flex")]
        assert!(parse(" CPU ").is_ok());
        #[cfg(feature = "flex")]
        assert_eq!(parse_list("cpu, cpu,flex").map(|d| d.len()), Ok(3));
        assert!(matches!(
            parse_list("cpu,,cpu"),
            Err(DeviceError::Unknown { .. })
        ));
        assert!(
            matches!(parse_list("cpu,tpu"), Err(DeviceError::Unknown { name }) if name == "tpu")
        );
        #[cfg(not(feature = "tch"))]
        assert_eq!(
            parse("libtorch-cuda:1").expect_err("not compiled"),
            DeviceError::NotCompiled {
                name: "libtorch-cuda",
                feature: "tch"
            }
        );
        #[cfg(not(feature = "wgpu"))]
        assert!(
            parse("wgpu")
                .expect_err("not compiled")
                .to_string()
                .contains("--features wgpu")
        );
    }
}
