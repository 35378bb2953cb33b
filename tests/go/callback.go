package main

// The chunk callback that libprovd calls, exported to C. It lives in a file of its own
// because a cgo preamble in a file with //export may only declare, not define.

/*
#include <stddef.h>
#include <stdint.h>
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// chunkSink receives the chunks of one callback-driven generation.
type chunkSink struct {
	text    []byte
	indexes []uint32
}

//export goOnChunk
func goOnChunk(userdata unsafe.Pointer, text *C.char, length C.size_t, index C.uint32_t) C.int {
	// userdata carries a cgo.Handle, not a Go pointer, as the cgo pointer rules require.
	sink := cgo.Handle(uintptr(userdata)).Value().(*chunkSink)
	sink.text = append(sink.text, C.GoBytes(unsafe.Pointer(text), C.int(length))...)
	sink.indexes = append(sink.indexes, uint32(index))
	return 0 // PROVD_CONTINUE
}
