;; submit_wrong_signature: imports `fabric.submit` without its id buffer parameters.
;; Tries: to call a host function with arguments of the wrong types.
;; Expected: `invalid`, the error naming `fabric::submit`; nothing runs.
(module
  (import "fabric" "submit" (func $submit (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0x100) "{\"module\":\"echo\"}")
  (func (export "_start")
    (drop (call $submit (i32.const 0x100) (i32.const 17)))))
