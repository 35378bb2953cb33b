#!/usr/bin/env python3
"""One-time migration of fuzz/corpus/provider_streams to the decoder-by-name format.

Before: the first byte chose the decoder, openai, anthropic, gemini, ollama by its value
modulo 4, and the rest was the pieces header and the body. After: the decoder's name and
a newline, then the same rest (provd::fuzzing::select_decoder). Each file keeps its name.

It writes provider_streams_by_name.tsv beside itself: every file migrated, its old first
byte, and the decoder the old rule chose. The test
every_migrated_provider_streams_input_reaches_the_decoder_it_reached_before
(tests/tests/fuzz_corpus.rs) checks the list against the old rule and the migrated files
against the new one. Run once, from the repository root, on a corpus of the old format;
running it again would read names as selector bytes, so it refuses a migrated corpus.
"""
import os
import sys

OLD_ORDER = ["openai", "anthropic", "gemini", "ollama"]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    corpus = os.path.join(here, "..", "corpus", "provider_streams")
    rows = []
    for name in sorted(os.listdir(corpus)):
        path = os.path.join(corpus, name)
        data = open(path, "rb").read()
        if any(data.startswith(d.encode() + b"\n") for d in OLD_ORDER):
            sys.exit(f"{name} is already migrated")
        if not data:
            continue  # skipped by both rules
        decoder = OLD_ORDER[data[0] % 4]
        rows.append((name, data[0], decoder, decoder.encode() + b"\n" + data[1:]))
    for name, _, _, new in rows:
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(new)
    with open(os.path.join(here, "provider_streams_by_name.tsv"), "w") as f:
        f.write("# file\told first byte\tdecoder chosen by the old rule\n")
        for name, byte, decoder, _ in rows:
            f.write(f"{name}\t{byte}\t{decoder}\n")
    print(f"{len(rows)} inputs migrated")


if __name__ == "__main__":
    main()
