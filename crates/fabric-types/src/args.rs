//! The bounds on a task's command-line arguments, checked by the server when a task is
//! submitted and by the sandbox before an attempt starts.

/// The most arguments a task may give its agent (after the program name).
pub const MAX_ARGS: usize = 256;

/// The most bytes a task's arguments may hold, all together.
pub const MAX_ARGS_BYTES: usize = 64 * 1024;

/// Checks a task's arguments: at most [`MAX_ARGS`] of them, at most [`MAX_ARGS_BYTES`]
/// bytes in all, and no NUL byte in any (a WASI argument is a C string). The error names
/// `args` and says which bound was broken.
pub fn check_args(args: &[String]) -> Result<(), String> {
    if args.len() > MAX_ARGS {
        return Err(format!(
            "args: {} arguments, more than the {MAX_ARGS} allowed",
            args.len()
        ));
    }
    let bytes: usize = args.iter().map(String::len).sum();
    if bytes > MAX_ARGS_BYTES {
        return Err(format!(
            "args: {bytes} bytes in all, more than the {MAX_ARGS_BYTES} allowed"
        ));
    }
    if let Some(i) = args.iter().position(|arg| arg.contains('\0')) {
        return Err(format!("args: argument {i} contains a NUL byte"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(n: usize, each: &str) -> Vec<String> {
        vec![each.to_owned(); n]
    }

    #[test]
    fn arguments_within_the_bounds_pass() {
        assert_eq!(check_args(&[]), Ok(()));
        assert_eq!(check_args(&strings(MAX_ARGS, "x")), Ok(()));
        assert_eq!(check_args(&["é ü".to_owned(), String::new()]), Ok(()));
        let exactly = vec!["a".repeat(MAX_ARGS_BYTES / 2); 2];
        assert_eq!(check_args(&exactly), Ok(()));
    }

    #[test]
    fn too_many_arguments_are_refused() {
        let error = check_args(&strings(MAX_ARGS + 1, "x")).unwrap_err();
        assert!(error.starts_with("args: 257 arguments"), "{error}");
    }

    #[test]
    fn too_many_bytes_are_refused() {
        let error = check_args(&["a".repeat(MAX_ARGS_BYTES + 1)]).unwrap_err();
        assert!(error.starts_with("args: 65537 bytes"), "{error}");
        let spread = strings(2, &"b".repeat(MAX_ARGS_BYTES / 2 + 1));
        assert!(check_args(&spread).unwrap_err().starts_with("args: "));
    }

    #[test]
    fn a_nul_byte_is_refused() {
        let args = ["ok".to_owned(), "a\0b".to_owned()];
        assert_eq!(
            check_args(&args),
            Err("args: argument 1 contains a NUL byte".into())
        );
    }
}
