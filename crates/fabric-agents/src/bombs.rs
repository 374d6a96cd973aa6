//! Compile bombs: modules written to make a compiler work hard, as WAT text. Only tests
//! use them (feature `attack-fixtures`).

use std::fmt::Write;

/// A `_start` with `locals` i64 locals and `depth` nested loops whose innermost body
/// rewrites every local from its neighbour, so each local is live, and rewritten, across
/// every loop header: the shape of the compile bomb of issue 13.
pub fn nested_loops_rewriting_locals(locals: usize, depth: usize) -> String {
    let mut source = format!(
        "(module (func (export \"_start\") (local {})\n",
        "i64 ".repeat(locals)
    );
    source.push_str(&"(loop ".repeat(depth));
    for i in 0..locals {
        let next = (i + 1) % locals;
        writeln!(
            source,
            "(local.set {i} (i64.add (local.get {i}) (local.get {next})))"
        )
        .unwrap();
    }
    source.push_str(&")".repeat(depth));
    source.push_str("))");
    source
}

/// `functions` functions, each with `locals` i64 locals and `diamonds` if/else diamonds
/// nested `depth` deep, each arm rewriting a different local: merges instead of loops.
pub fn nested_diamonds(functions: usize, locals: usize, depth: usize, diamonds: usize) -> String {
    let mut source = String::from("(module\n");
    for _ in 0..functions {
        write!(
            source,
            "(func (param i32) (local {})",
            "i64 ".repeat(locals)
        )
        .unwrap();
        source.push_str(&"(block ".repeat(depth));
        for d in 0..diamonds {
            let a = 1 + (d * 7) % locals;
            let b = 1 + (d * 13 + 1) % locals;
            writeln!(
                source,
                "(if (local.get 0) (then (local.set {a} (i64.add (local.get {a}) (local.get {b})))) (else (local.set {b} (i64.sub (local.get {b}) (local.get {a}))))) (br_if {} (local.get 0))",
                d % depth
            )
            .unwrap();
        }
        source.push_str(&")".repeat(depth));
        source.push_str(")\n");
    }
    source.push_str("(func (export \"_start\")))");
    source
}
