;; deep_recursion: a function with locals that are live across its call to itself
;; recurses without end.
;; Tries: to overflow the host's stack.
;; Expected: `trap` with kind stack overflow (the engine's own stack limit, not a crash
;; of the host).
(module
  (memory (export "memory") 1)
  (func $recurse (param $depth i64) (result i64)
    (local $next i64)
    (local $scaled i64)
    (local $mixed i64)
    (local.set $next (i64.add (local.get $depth) (i64.const 1)))
    (local.set $scaled (i64.mul (local.get $next) (i64.const 3)))
    (local.set $mixed (i64.xor (local.get $scaled) (local.get $depth)))
    ;; Not a tail call: the result is combined with the locals afterwards.
    (i64.add
      (i64.add (local.get $scaled) (local.get $mixed))
      (call $recurse (local.get $next))))
  (func (export "_start")
    (drop (call $recurse (i64.const 0)))))
