//! A scan of every function body before compilation, which refuses the shapes that make
//! Cranelift's compile time explode, one function at a time and for the module as a whole,
//! so that one upload cannot hold a core for minutes.
//!
//! Measured (threat model, finding 3): register allocation is superlinear in the values
//! live at once, so 100,000 values on the operand stack across a call took more than two
//! minutes, and 50,000 nested `loop`s 12.7 s, while ordinary compiler output stays far
//! below the limits here (operand stacks of tens of values, nesting of hundreds). Under
//! those limits, compile time still grows with locals × operators, more for operators in
//! nested loops: a 51 KB module of 5,000 locals rewritten in 500 nested loops took 23 s.
//! [`MAX_MODULE_COST`] bounds that product, summed over the module (threat model,
//! finding 5).

use wasmparser::{
    FuncValidatorAllocations, Operator, Parser, ValidPayload, Validator, WasmFeatures,
};

/// The most values on one function's operand stack at any point.
pub const MAX_OPERAND_STACK: usize = 2_000;
/// The deepest nesting of blocks, loops and ifs in one function.
pub const MAX_CONTROL_DEPTH: usize = 5_000;
/// The most locals one function declares (parameters included).
pub const MAX_LOCALS: u32 = 10_000;
/// The largest body of one function, in bytes.
pub const MAX_FUNCTION_BYTES: usize = 2 << 20;
/// The most compile cost (see [`compile_cost`]) one module or component may have: about
/// 2 s of Cranelift's time for the costliest shapes measured (threat model, finding 5),
/// 160 times what the largest example agent costs.
pub const MAX_MODULE_COST: u64 = 4_000_000_000;
/// What one control operator (`block`, `loop`, `if`, `else`, `end`, `br`, `br_if`,
/// `br_table`) counts in [`compile_cost`] instead of 1, plus one for each loop around it:
/// code that branches without loops (if/else diamonds, `br_if` out of blocks) took as
/// long per local as if each of its control operators sat in about 160 loops.
const CONTROL_WEIGHT: u64 = 160;

/// Checks every function of a module or component (nested modules included) against the
/// per-function limits above, and the whole against [`MAX_MODULE_COST`]; the error names
/// the function and the limit, or the module's cost and the budget. Types open to
/// subtyping are refused first (`subtypes`). Invalid Wasm is left for the compiler to
/// report.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    crate::subtypes::refuse_subtyping(bytes)?;
    let cost = compile_cost(bytes)?;
    if cost > MAX_MODULE_COST {
        return Err(format!(
            "the module is too complex to compile: its compile cost is {cost}, over the budget of {MAX_MODULE_COST}"
        ));
    }
    Ok(())
}

/// The compile cost of a module or component: the sum, over its functions, of
/// (locals + 1) × the sum, over the function's operators, of their weight (1, or 160 for
/// a control operator) plus the number of loops the operator sits in. A local rewritten
/// in a loop nested d deep needs a block
/// parameter, and moves, at each of the d loop headers; every branch merges the locals
/// it carries. Measured, such shapes compile at 2.0 to 3.7 × 10⁹ of cost per second, and
/// compiler output at about 5 × 10⁷ (for it, the cost is an overestimate). Fails, naming the
/// function and the limit, when one function passes a per-function limit. Invalid Wasm is
/// left for the compiler (the cost counts the functions read until then).
pub fn compile_cost(bytes: &[u8]) -> Result<u64, String> {
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let mut allocations = FuncValidatorAllocations::default();
    let mut total: u64 = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(total);
        };
        let Ok(valid) = validator.payload(&payload) else {
            return Ok(total);
        };
        let ValidPayload::Func(func, body) = valid else {
            continue;
        };
        let index = func.index;
        let too_complex =
            |what: String| format!("function {index} is too complex to compile: {what}");
        let size = body.range().len();
        if size > MAX_FUNCTION_BYTES {
            return Err(too_complex(format!(
                "its body is {size} bytes, over the limit of {MAX_FUNCTION_BYTES}"
            )));
        }
        let mut func = func.into_validator(std::mem::take(&mut allocations));
        let Ok(mut locals) = body.get_locals_reader() else {
            return Ok(total);
        };
        for _ in 0..locals.get_count() {
            let Ok((count, ty)) = locals.read() else {
                return Ok(total);
            };
            if func
                .define_locals(locals.original_position(), count, ty)
                .is_err()
            {
                return Ok(total);
            }
        }
        let declared = func.len_locals();
        if declared > MAX_LOCALS {
            return Err(too_complex(format!(
                "{declared} locals, over the limit of {MAX_LOCALS}"
            )));
        }
        let Ok(mut operators) = body.get_operators_reader() else {
            return Ok(total);
        };
        // Whether each block open inside the body is a loop, and how many are.
        let mut frames: Vec<bool> = Vec::new();
        let mut loops: u64 = 0;
        let mut weighted_operators: u64 = 0;
        while !operators.eof() {
            let offset = operators.original_position();
            let Ok(op) = operators.read() else {
                return Ok(total);
            };
            let weight = match op {
                Operator::Block { .. }
                | Operator::Loop { .. }
                | Operator::If { .. }
                | Operator::Else
                | Operator::End
                | Operator::Br { .. }
                | Operator::BrIf { .. }
                | Operator::BrTable { .. } => CONTROL_WEIGHT,
                _ => 1,
            };
            weighted_operators += weight + loops;
            let before = func.control_stack_height();
            if func.op(offset, &op).is_err() {
                return Ok(total);
            }
            let height = func.operand_stack_height() as usize;
            if height > MAX_OPERAND_STACK {
                return Err(too_complex(format!(
                    "{height} values on its operand stack, over the limit of {MAX_OPERAND_STACK}"
                )));
            }
            let depth = func.control_stack_height();
            if depth as usize > MAX_CONTROL_DEPTH {
                return Err(too_complex(format!(
                    "blocks nested {depth} deep, over the limit of {MAX_CONTROL_DEPTH}"
                )));
            }
            if depth > before {
                let is_loop = matches!(op, Operator::Loop { .. });
                loops += u64::from(is_loop);
                frames.push(is_loop);
            } else if depth < before && frames.pop() == Some(true) {
                loops -= 1;
            }
        }
        // At most 10,001 × 2 MiB × (160 + 5,000) per function: no overflow within one.
        total = total.saturating_add((u64::from(declared) + 1) * weighted_operators);
        allocations = func.into_allocations();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(body: &str, locals: &str) -> Vec<u8> {
        wat::parse_str(format!(
            "(module (func $f) (func (export \"g\") {locals} {body}))"
        ))
        .unwrap()
    }

    #[test]
    fn ordinary_code_passes() {
        let body = "(drop (i32.add (i32.const 1) (i32.const 2))) (block (loop (br 1)))";
        assert_eq!(check(&module(body, "(local i32 i64)")), Ok(()));
    }

    #[test]
    fn deep_operand_stacks_are_refused() {
        let ok = "(i32.const 0) ".repeat(MAX_OPERAND_STACK) + &"(drop) ".repeat(MAX_OPERAND_STACK);
        assert_eq!(check(&module(&ok, "")), Ok(()));
        let n = MAX_OPERAND_STACK + 1;
        let deep = "(i32.const 0) ".repeat(n) + "(call $f) " + &"(drop) ".repeat(n);
        let err = check(&module(&deep, "")).unwrap_err();
        assert!(
            err.contains("function 1") && err.contains("2001 values"),
            "{err}"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let n = MAX_CONTROL_DEPTH + 1;
        let nested = "(loop ".repeat(n) + &")".repeat(n);
        let err = check(&module(&nested, "")).unwrap_err();
        assert!(err.contains("nested 5001 deep"), "{err}");
    }

    #[test]
    fn many_locals_are_refused() {
        let err = check(&module("", &format!("(local {})", "i32 ".repeat(10_001)))).unwrap_err();
        assert!(err.contains("10001 locals"), "{err}");
    }

    #[test]
    fn the_cost_counts_locals_times_operators_weighted_by_enclosing_loops() {
        // $f: `end` alone, no locals: 1 × 160. g: 3 × (loop 160 + nop 1 + 1 + end 160 + 1
        // + end 160).
        let wasm = module("(loop (nop))", "(local i32 i32)");
        assert_eq!(compile_cost(&wasm), Ok(160 + 3 * 483));
    }

    #[test]
    fn modules_over_the_budget_are_refused_naming_cost_and_budget() {
        // 10,000 × 2,500 `block`s and their `end`s, 160 each: 8 × 10⁹, over the budget.
        let body = "(block) ".repeat(2_500);
        let wasm = module(&body, &format!("(local {})", "i32 ".repeat(9_999)));
        let cost = compile_cost(&wasm).unwrap();
        assert!(cost > MAX_MODULE_COST, "{cost}");
        let err = check(&wasm).unwrap_err();
        assert!(
            err.contains(&format!(
                "compile cost is {cost}, over the budget of {MAX_MODULE_COST}"
            )),
            "{err}"
        );
    }

    #[test]
    fn invalid_wasm_is_left_to_the_compiler() {
        assert_eq!(check(b"\0asm\x01\0\0\0\x01"), Ok(()));
    }
}
