;; table_bomb: `_start` grows a funcref table by 10000 elements at a time until
;; `table.grow` returns -1, then returns normally.
;; Tries: to take host memory through a table instead of a linear memory.
;; Expected: `memory_limit` (table growth is limited and a failed grow traps).
(module
  (memory (export "memory") 1)
  (table $t 0 funcref)
  (func (export "_start")
    (block $full
      (loop $grow
        (br_if $full
          (i32.eq
            (table.grow $t (ref.null func) (i32.const 10000))
            (i32.const -1)))
        (br $grow)))))
