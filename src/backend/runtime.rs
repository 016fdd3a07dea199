//! Finding and loading the ONNX Runtime shared library. The gateway loads it at run time so the
//! same binary works with the CPU or the GPU build, and so a missing library is a clear start-up
//! error instead of a panic inside `ort`.

use super::BackendError;
use crate::config::RuntimeLibrary;
use ort::environment::Environment;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The command printed when no library is found; the Makefile target installs the pinned wheel.
pub const INSTALL_HINT: &str = "run `make runtime` (it installs the onnxruntime==1.31.1 wheel into .runtime/), or set runtime.onnxruntime or ORT_DYLIB_PATH to a libonnxruntime.so";

/// The project-local folder `make runtime` installs into.
const LOCAL_DIR: &str = ".runtime";

/// Resolves `runtime.onnxruntime`: an explicit path (checked by config validation, and again
/// here since the file may have gone since), or "auto" (ORT_DYLIB_PATH, then `.runtime/` under
/// the working directory or any ancestor of the executable).
pub fn locate(setting: &RuntimeLibrary) -> Result<PathBuf, BackendError> {
    if let RuntimeLibrary::Path(path) = setting {
        return if path.is_file() {
            Ok(path.clone())
        } else {
            Err(BackendError::RuntimeMissing(format!(
                "runtime.onnxruntime points at {}, which is not a file; {INSTALL_HINT}",
                path.display()
            )))
        };
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from) {
        if path.is_file() {
            return Ok(path);
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    for root in &roots {
        if let Some(found) = find_in(&root.join(LOCAL_DIR)) {
            return Ok(found);
        }
    }
    Err(BackendError::RuntimeMissing(format!(
        "ONNX Runtime library not found (runtime.onnxruntime = \"auto\" looked at ORT_DYLIB_PATH and {LOCAL_DIR}/ under the working directory and the executable's folders); {INSTALL_HINT}"
    )))
}

/// The wheel ships `onnxruntime/capi/libonnxruntime.so.<version>` and no unversioned name.
fn find_in(dir: &Path) -> Option<PathBuf> {
    let capi = dir.join("onnxruntime").join("capi");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    candidates.sort();
    candidates.pop()
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment. ONNX Runtime allows one per process, so the first
/// caller's library wins and later callers share it.
pub fn environment(setting: &RuntimeLibrary) -> Result<&'static Environment, BackendError> {
    let result = ENVIRONMENT.get_or_init(|| {
        let path = locate(setting).map_err(|e| e.to_string())?;
        let builder = ort::init_from(&path)
            .map_err(|e| format!("cannot load {}: {e}; {INSTALL_HINT}", path.display()))?;
        builder
            .with_name("tollgate")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
    });
    result
        .as_ref()
        .map_err(|message| BackendError::RuntimeMissing(message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_missing_path_names_the_install_command() {
        let err = locate(&RuntimeLibrary::Path(
            "/nonexistent/libonnxruntime.so.1".into(),
        ))
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("/nonexistent/libonnxruntime.so.1"),
            "{message}"
        );
        assert!(message.contains("make runtime"), "{message}");
    }

    #[test]
    fn the_newest_versioned_library_in_a_folder_is_found() {
        let dir = std::env::temp_dir().join(format!("tollgate-rt-{}", std::process::id()));
        let capi = dir.join("onnxruntime").join("capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.31.1"), b"").unwrap();
        std::fs::write(capi.join("other.so"), b"").unwrap();
        assert_eq!(find_in(&dir), Some(capi.join("libonnxruntime.so.1.31.1")));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(find_in(&dir), None);
    }
}
