// Command http_client streams a chat completion from provd's HTTP front door with Go's
// standard net/http over the Unix socket, reading the server-sent events by hand, and
// prints one JSON line: the text, the finish reason, the usage and the chunk count.
// Run by tests/tests/http_clients.rs:
//
//	http_client SOCKET MODEL
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

type chunk struct {
	Object  string `json:"object"`
	Choices []struct {
		Delta struct {
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

type result struct {
	Status      int    `json:"status"`
	ContentType string `json:"content_type"`
	Text        string `json:"text"`
	Finish      string `json:"finish_reason"`
	Prompt      int    `json:"prompt_tokens"`
	Completion  int    `json:"completion_tokens"`
	Chunks      int    `json:"chunks"`
	Done        bool   `json:"done"`
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: http_client SOCKET MODEL")
		os.Exit(2)
	}
	socket, model := os.Args[1], os.Args[2]
	client := &http.Client{Transport: &http.Transport{
		// Every request goes to the socket, whatever host the URL names.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	body, _ := json.Marshal(map[string]any{
		"model":          model,
		"messages":       []map[string]string{{"role": "user", "content": "hi"}},
		"stream":         true,
		"stream_options": map[string]bool{"include_usage": true},
	})
	resp, err := client.Post("http://provd/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintln(os.Stderr, "request:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	out := result{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type")}
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		data := strings.TrimPrefix(line, "data: ")
		if data == "[DONE]" {
			out.Done = true
			break
		}
		var c chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			fmt.Fprintln(os.Stderr, "chunk:", err, data)
			os.Exit(1)
		}
		if c.Object != "chat.completion.chunk" {
			fmt.Fprintln(os.Stderr, "object:", c.Object)
			os.Exit(1)
		}
		out.Chunks++
		for _, choice := range c.Choices {
			if choice.Delta.Content != nil {
				out.Text += *choice.Delta.Content
			}
			if choice.FinishReason != nil {
				out.Finish = *choice.FinishReason
			}
		}
		if c.Usage != nil {
			out.Prompt, out.Completion = c.Usage.PromptTokens, c.Usage.CompletionTokens
		}
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "read:", err)
		os.Exit(1)
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}
