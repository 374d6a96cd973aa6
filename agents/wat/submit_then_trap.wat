;; submit_then_trap: submits two children, then traps.
;; Tries: to have the children of a failed attempt created.
;; Expected: `trap` (kind: unreachable); the sandbox still returns the two children it
;; accepted, in order, for the caller to drop: only an `ok` attempt's children are kept.
(module
  (import "fabric" "submit" (func $submit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0x100) "{\"module\":\"echo\",\"input\":\"one\"}")
  (data (i32.const 0x140) "{\"module\":\"echo\",\"input\":\"two\"}")
  (func (export "_start")
    (drop (call $submit (i32.const 0x100) (i32.const 31) (i32.const 0x200) (i32.const 64)))
    (drop (call $submit (i32.const 0x140) (i32.const 31) (i32.const 0x200) (i32.const 64)))
    unreachable))
