//! Refuses modules that declare a type open to subtyping (a non-final type, or one with a
//! supertype: the GC proposal's `sub`). Wasmtime 48.0.8 built without its `gc` feature, as
//! ours is, aborts the whole process when such a type reaches a run-time type check
//! (`call_indirect`, `ref.test`, `ref.cast`, `br_on_cast`): GHSA-rc4p-x33f-vpr2, fixed in
//! 48.0.9, which the registry this project builds from does not carry. A 200-byte module
//! aborted `fabric run` (threat model, finding 9). No toolchain emits such types without
//! the GC proposal, which the fabric does not support anyway.

use wasmparser::{CoreType, ModuleTypeDeclaration, Parser, Payload, RecGroup};

/// Fails, naming the type, when a module or component (nested modules included) declares
/// a non-final type or a type with a supertype. Malformed sections are left for the
/// validator to report.
pub(crate) fn refuse_subtyping(bytes: &[u8]) -> Result<(), String> {
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(());
        };
        match payload {
            Payload::TypeSection(reader) => {
                for group in reader {
                    let Ok(group) = group else { return Ok(()) };
                    check(&group)?;
                }
            }
            Payload::CoreTypeSection(reader) => {
                for ty in reader {
                    match ty {
                        Ok(CoreType::Rec(group)) => check(&group)?,
                        Ok(CoreType::Module(decls)) => {
                            for decl in decls.iter() {
                                if let ModuleTypeDeclaration::Type(group) = decl {
                                    check(group)?;
                                }
                            }
                        }
                        Err(_) => return Ok(()),
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn check(group: &RecGroup) -> Result<(), String> {
    for ty in group.types() {
        if !ty.is_final || ty.supertype_idx.is_some() {
            return Err(format!(
                "the module declares the type `{ty}`, open to subtyping (the GC proposal's \
                 `sub`), which this fabric does not support"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wasm(source: &str) -> Vec<u8> {
        wat::parse_str(source).unwrap()
    }

    #[test]
    fn non_final_types_and_subtypes_are_refused_and_final_ones_pass() {
        let open = wasm("(module (type (sub (func))))");
        assert!(
            refuse_subtyping(&open)
                .unwrap_err()
                .contains("open to subtyping")
        );
        let sub = wasm("(module (type $t (sub (func))) (type (sub final $t (func))))");
        assert!(refuse_subtyping(&sub).is_err());
        let plain = wasm("(module (type (func (param i32))) (func (type 0)))");
        assert_eq!(refuse_subtyping(&plain), Ok(()));
        let component = wasm("(component (core module (type (sub (func))) (func (export \"f\"))))");
        assert!(refuse_subtyping(&component).is_err());
        assert_eq!(refuse_subtyping(b"not wasm"), Ok(()));
    }
}
