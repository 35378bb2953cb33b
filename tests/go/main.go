// A Go caller of libprovd through cgo, built and run by tests/tests/ffi.rs.
//
// Usage: provd-go SOCKET_PATH
//
// It streams a generation with the pull API and with a Go callback, runs a tool round
// trip (the call read in pieces with provd_stream_chunk, its result sent back, the answer
// read through provd_client_generate_events), runs generations from several goroutines
// on one client (goroutines move between OS threads, which is why
// errors come back through an out-parameter rather than a thread-local), and checks that
// an unknown provider fails with PROVD_NOT_FOUND and a message. Prints "go: N failed".
package main

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -lprovd
#include <stdint.h>
#include <stdlib.h>
#include "provd.h"

extern int goOnChunk(void *userdata, char *text, size_t length, uint32_t index);
extern int goOnEvent(void *userdata, provd_chunk *chunk);

// The exported Go function's C type differs from provd_chunk_callback only in constness.
static inline provd_status generate_with_go_callback(const provd_client *client,
                                                     const provd_request *request,
                                                     uintptr_t handle, provd_done **done,
                                                     provd_error **err) {
	return provd_client_generate(client, request, (provd_chunk_callback)goOnChunk,
	                             (void *)handle, NULL, done, err);
}

static inline provd_status generate_events_with_go_callback(const provd_client *client,
                                                            const provd_request *request,
                                                            uintptr_t handle, provd_done **done,
                                                            provd_error **err) {
	return provd_client_generate_events(client, request, (provd_chunk_event_callback)goOnEvent,
	                                    (void *)handle, NULL, done, err);
}
*/
import "C"

import (
	"fmt"
	"os"
	"runtime/cgo"
	"strings"
	"sync"
	"unsafe"
)

var failed int

func check(ok bool, format string, args ...interface{}) {
	if !ok {
		failed++
		fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	}
}

// provdError turns a status and its error object into a Go error, freeing the object.
func provdError(status C.provd_status, err *C.provd_error) error {
	defer C.provd_error_free(err)
	if status == C.PROVD_OK {
		return nil
	}
	var msg C.provd_str
	text := "(no message)"
	if C.provd_error_message(err, &msg) == C.PROVD_OK {
		text = C.GoStringN(msg.data, C.int(msg.len))
	}
	return fmt.Errorf("%s: %s", C.GoString(C.provd_status_name(C.uint(status))), text)
}

// withString passes s to f as pointer + length (copied into C memory for the call).
func withString(s string, f func(*C.char, C.size_t) C.provd_status) C.provd_status {
	cs := C.CString(s)
	defer C.free(unsafe.Pointer(cs))
	return f(cs, C.size_t(len(s)))
}

func newRequest(prompt, paramsJSON string) *C.provd_request {
	var req *C.provd_request
	check(C.provd_request_new(&req, nil) == C.PROVD_OK, "request_new")
	check(withString(prompt, func(p *C.char, n C.size_t) C.provd_status {
		return C.provd_request_set_prompt(req, p, n, nil)
	}) == C.PROVD_OK, "set_prompt")
	check(withString(paramsJSON, func(p *C.char, n C.size_t) C.provd_status {
		return C.provd_request_set_additional_params_json(req, p, n, nil)
	}) == C.PROVD_OK, "set_additional_params_json")
	return req
}

func numbered(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "%d ", i)
	}
	return b.String()
}

func pullStream(client *C.provd_client, chunks int) (string, error) {
	req := newRequest("count for me", fmt.Sprintf(`{"mock": {"numbered": true, "chunks": %d}}`, chunks))
	defer C.provd_request_free(req)
	var stream *C.provd_stream
	var cerr *C.provd_error
	if err := provdError(C.provd_stream_start(client, req, &stream, &cerr), cerr); err != nil {
		return "", err
	}
	defer C.provd_stream_free(stream)
	var b strings.Builder
	for {
		var text C.provd_str
		status := C.provd_stream_next(stream, &text, &cerr)
		if err := provdError(status, cerr); err != nil {
			return b.String(), err
		}
		if text.data == nil {
			break
		}
		b.WriteString(C.GoStringN(text.data, C.int(text.len)))
	}
	var done *C.provd_done
	if err := provdError(C.provd_stream_finish(stream, &done, &cerr), cerr); err != nil {
		return b.String(), err
	}
	defer C.provd_done_free(done)
	var usage C.provd_usage
	C.provd_done_usage(done, &usage)
	check(int(usage.completion_tokens) == chunks, "completion tokens %d", usage.completion_tokens)
	return b.String(), nil
}

const weatherTools = `[{"name": "get_weather", "description": "The weather in a city",
  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]`

// toolRoundTrip runs a two-turn tool conversation and returns the final answer.
func toolRoundTrip(client *C.provd_client) (string, error) {
	var req *C.provd_request
	var cerr *C.provd_error
	check(C.provd_request_new(&req, nil) == C.PROVD_OK, "request_new")
	defer C.provd_request_free(req)
	check(withString("What is the weather in Paris?", func(p *C.char, n C.size_t) C.provd_status {
		return C.provd_request_add_message(req, C.PROVD_ROLE_USER, p, n, nil)
	}) == C.PROVD_OK, "user turn")
	status := withString(weatherTools, func(p *C.char, n C.size_t) C.provd_status {
		return C.provd_request_set_tools_json(req, p, n, &cerr)
	})
	if err := provdError(status, cerr); err != nil {
		return "", err
	}

	// Turn one, pulled: every chunk is a piece of the call.
	var stream *C.provd_stream
	if err := provdError(C.provd_stream_start(client, req, &stream, &cerr), cerr); err != nil {
		return "", err
	}
	defer C.provd_stream_free(stream)
	var streamed strings.Builder
	firstName := ""
	for {
		var text C.provd_str
		if err := provdError(C.provd_stream_next(stream, &text, &cerr), cerr); err != nil {
			return "", err
		}
		if text.data == nil {
			break
		}
		var chunk C.provd_chunk
		check(C.provd_stream_chunk(stream, &chunk) == C.PROVD_OK, "stream_chunk")
		check(chunk.kind == C.PROVD_CHUNK_TOOL_CALL, "chunk %d is of kind %d", chunk.index, chunk.kind)
		if firstName == "" && chunk.tool_call_name.data != nil {
			firstName = C.GoStringN(chunk.tool_call_name.data, C.int(chunk.tool_call_name.len))
		}
		streamed.WriteString(C.GoStringN(chunk.tool_call_arguments.data, C.int(chunk.tool_call_arguments.len)))
	}
	check(firstName == "get_weather", "first piece names %q", firstName)
	var done *C.provd_done
	if err := provdError(C.provd_stream_finish(stream, &done, &cerr), cerr); err != nil {
		return "", err
	}
	var calls C.size_t
	C.provd_done_tool_calls_len(done, &calls)
	check(calls == 1, "%d calls", calls)
	var call C.provd_tool_call
	check(C.provd_done_tool_calls_get(done, 0, &call) == C.PROVD_OK, "call 0")
	id := C.GoStringN(call.id.data, C.int(call.id.len))
	arguments := C.GoStringN(call.arguments.data, C.int(call.arguments.len))
	check(id == "mock_call_0" && arguments == streamed.String(), "call %s %s, streamed %s", id, arguments, streamed.String())
	fmt.Printf("go tool call: %s %s %s\n", C.GoStringN(call.name.data, C.int(call.name.len)), id, arguments)

	// Turn two: the call and its result go back (call.id points into done, still alive).
	check(C.provd_request_add_turn_from_done(req, done, nil, 0, nil) == C.PROVD_OK, "turn from done")
	status = withString("18 degrees and sunny", func(p *C.char, n C.size_t) C.provd_status {
		return C.provd_request_add_tool_result(req, call.id.data, call.id.len, p, n, C.bool(false), &cerr)
	})
	C.provd_done_free(done)
	if err := provdError(status, cerr); err != nil {
		return "", err
	}
	sink := &eventSink{}
	handle := cgo.NewHandle(sink)
	defer handle.Delete()
	status = C.generate_events_with_go_callback(client, req, C.uintptr_t(handle), nil, &cerr)
	if err := provdError(status, cerr); err != nil {
		return "", err
	}
	check(sink.pieces == 0, "%d pieces in the answer", sink.pieces)
	return string(sink.text), nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: provd-go SOCKET_PATH")
		os.Exit(2)
	}
	var client *C.provd_client
	var cerr *C.provd_error
	status := withString(os.Args[1], func(p *C.char, n C.size_t) C.provd_status {
		return C.provd_client_connect(p, n, &client, &cerr)
	})
	if err := provdError(status, cerr); err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer C.provd_client_free(client)

	// Pull API.
	text, err := pullStream(client, 12)
	check(err == nil, "stream: %v", err)
	check(text == numbered(12), "stream text %q", text)
	fmt.Printf("go stream: %s\n", text)

	// Callback API, with a Go function as the callback.
	sink := &chunkSink{}
	handle := cgo.NewHandle(sink)
	req := newRequest("count for me", `{"mock": {"numbered": true, "chunks": 6}}`)
	var done *C.provd_done
	status = C.generate_with_go_callback(client, req, C.uintptr_t(handle), &done, &cerr)
	handle.Delete()
	C.provd_request_free(req)
	check(provdError(status, cerr) == nil, "generate with a Go callback")
	check(string(sink.text) == numbered(6), "callback text %q", sink.text)
	for i, index := range sink.indexes {
		check(int(index) == i, "chunk %d has index %d", i, index)
	}
	var reason C.provd_finish_reason
	C.provd_done_finish_reason(done, &reason)
	check(reason == C.PROVD_FINISH_STOP, "finish reason %d", reason)
	C.provd_done_free(done)
	fmt.Printf("go callback: %s\n", sink.text)

	// A tool round trip.
	answer, err := toolRoundTrip(client)
	check(err == nil, "tool round trip: %v", err)
	check(answer == "The tool get_weather returned: 18 degrees and sunny", "tool answer %q", answer)
	fmt.Printf("go tool answer: %s\n", answer)

	// Goroutines sharing one client.
	var wg sync.WaitGroup
	results := make([]string, 6)
	errs := make([]error, 6)
	for g := range results {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			results[g], errs[g] = pullStream(client, 20+g)
		}(g)
	}
	wg.Wait()
	for g := range results {
		check(errs[g] == nil && results[g] == numbered(20+g), "goroutine %d: %v %q", g, errs[g], results[g])
	}

	// An unknown provider: the error comes back with its code and message.
	req = newRequest("hi", `{}`)
	check(withString("no-such-provider", func(p *C.char, n C.size_t) C.provd_status {
		return C.provd_request_set_provider(req, p, n, nil)
	}) == C.PROVD_OK, "set_provider")
	var stream *C.provd_stream
	check(C.provd_stream_start(client, req, &stream, nil) == C.PROVD_OK, "start")
	var chunk C.provd_str
	status = C.provd_stream_next(stream, &chunk, &cerr)
	err = provdError(status, cerr)
	check(status == C.PROVD_NOT_FOUND, "unknown provider gave %v", err)
	check(err != nil && strings.Contains(err.Error(), "no-such-provider"), "message: %v", err)
	fmt.Printf("go error: %v\n", err)
	C.provd_stream_free(stream)
	C.provd_request_free(req)

	fmt.Printf("go: %d failed\n", failed)
	if failed > 0 {
		os.Exit(1)
	}
}
