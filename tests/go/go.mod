module provd.invalid/ffi-go-caller

go 1.19
