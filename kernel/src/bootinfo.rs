//! What the kernel booted with: the device tree, what the kernel read from it, and the command
//! line. Set once by `boot` on the boot CPU; read by anything below it (fault reporting, the
//! kvm reader, tests) without depending on the boot sequence itself.

use crate::devtree::SystemInfo;

static SYSTEM_INFO: spin::Once<SystemInfo> = spin::Once::new();
static DEVICE_TREE: spin::Once<&'static [u8]> = spin::Once::new();

/// Records the device tree. Boot CPU, once.
#[cfg(target_arch = "aarch64")]
pub(crate) fn set_device_tree(dtb: &'static [u8]) {
    DEVICE_TREE.call_once(|| dtb);
}

/// Records what the device tree said and returns the stored copy. Boot CPU, once.
#[cfg(target_arch = "aarch64")]
pub(crate) fn set_system_info(info: SystemInfo) -> &'static SystemInfo {
    SYSTEM_INFO.call_once(|| info)
}

/// What the device tree said, once the boot CPU has parsed it. Context: any.
pub fn system_info() -> &'static SystemInfo {
    SYSTEM_INFO
        .get()
        .expect("system_info() before the device tree was parsed")
}

/// The device tree the kernel booted with (empty before boot recorded it). Context: any.
pub fn device_tree() -> &'static [u8] {
    DEVICE_TREE.get().copied().unwrap_or(&[])
}

/// The value of `key=value` on the kernel command line (`/chosen/bootargs`), if present.
/// Context: any.
pub fn bootarg(key: &str) -> Option<&'static str> {
    find_bootarg(SYSTEM_INFO.get()?.bootargs(), key)
}

/// The value of the first `key=value` word of the command line `line`, if there is one. Pure
/// string work: boards and the kernel use it before the MMU is on.
pub fn find_bootarg<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|word| {
        let (k, v) = word.split_once('=')?;
        (k == key).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::find_bootarg;

    #[test]
    fn find_bootarg_takes_the_first_exact_key() {
        let line = "exit=semihosting  crash=early-panic crash=panic xcrash=1 flag";
        assert_eq!(find_bootarg(line, "exit"), Some("semihosting"));
        assert_eq!(find_bootarg(line, "crash"), Some("early-panic"));
        assert_eq!(find_bootarg(line, "rash"), None);
        assert_eq!(find_bootarg(line, "flag"), None);
        assert_eq!(find_bootarg("", "exit"), None);
    }
}
