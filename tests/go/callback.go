package main

// The chunk callbacks that libprovd calls, exported to C. It lives in a file of its own
// because a cgo preamble in a file with //export may only declare, not define.

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#include <stddef.h>
#include <stdint.h>
#include "provd.h"
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

// eventSink receives the chunks of a generation run by provd_client_generate_events.
type eventSink struct {
	text      []byte
	reasoning []byte
	pieces    int
}

//export goOnEvent
func goOnEvent(userdata unsafe.Pointer, chunk *C.provd_chunk) C.int {
	sink := cgo.Handle(uintptr(userdata)).Value().(*eventSink)
	switch chunk.kind {
	case C.PROVD_CHUNK_TEXT:
		sink.text = append(sink.text, C.GoBytes(unsafe.Pointer(chunk.text.data), C.int(chunk.text.len))...)
	case C.PROVD_CHUNK_REASONING:
		sink.reasoning = append(sink.reasoning, C.GoBytes(unsafe.Pointer(chunk.reasoning.data), C.int(chunk.reasoning.len))...)
	case C.PROVD_CHUNK_TOOL_CALL:
		sink.pieces++
	}
	return 0 // PROVD_CONTINUE
}
