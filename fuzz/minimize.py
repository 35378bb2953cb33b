#!/usr/bin/env python3
"""Adds to fuzz/corpus/TARGET the fewest inputs of a fuzzing run's scratch corpus that keep
the most of its coverage, up to a cap on the committed corpus.

    cargo +nightly fuzz build -O
    python3 fuzz/minimize.py TARGET SCRATCH_DIR [CAP]   # CAP defaults to 500 files

`cargo fuzz cmin` keeps every input that adds any coverage, which for targets built on
serde_json or toml is thousands of files, mostly for the dependencies' error paths. This
runs libFuzzer's set cover merge (edges only, -use_counters=0) for its data, which lists
every edge of every input (a plain -merge=1 lists only the edges new at that input), keeps
every file already committed (seeds and regressions), then adds greedily the input that
brings the most edges not yet held, until CAP files or no input adds anything. It prints
how many of the reachable edges the committed corpus keeps.
"""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    target, scratch = sys.argv[1], os.path.abspath(sys.argv[2])
    cap = int(sys.argv[3]) if len(sys.argv) == 4 else 500
    here = os.path.dirname(os.path.abspath(__file__))
    corpus = os.path.join(here, "corpus", target)
    binaries = glob.glob(os.path.join(here, "target", "*", "release", target))
    if not binaries:
        sys.exit(f"no fuzz target binary for {target}: run `cargo +nightly fuzz build -O`")
    work = tempfile.mkdtemp(prefix=f"provd-minimize-{target}-")
    try:
        control = os.path.join(work, "control")
        os.makedirs(os.path.join(work, "out"))
        subprocess.run(
            [binaries[0], "-set_cover_merge=1", "-use_counters=0", "-timeout=10",
             f"-merge_control_file={control}", os.path.join(work, "out"), corpus, scratch],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        lines = open(control).read().split("\n")
        count = int(lines[0])
        files = lines[2:2 + count]
        features = {}
        for line in lines[2 + count:]:
            parts = line.split()
            if parts and parts[0] == "FT":
                features[int(parts[1])] = set(map(int, parts[2:]))
        reachable = set().union(*features.values()) if features else set()
        held, committed, candidates = set(), 0, {}
        for i, path in enumerate(files):
            if os.path.dirname(path) == corpus:
                held |= features.get(i, set())
                committed += 1
            else:
                candidates[i] = features.get(i, set())
        added = 0
        while committed + added < cap and candidates:
            best = max(candidates, key=lambda i: len(candidates[i] - held))
            if not candidates[best] - held:
                break
            held |= candidates.pop(best)
            data = open(files[best], "rb").read()
            with open(os.path.join(corpus, hashlib.sha1(data).hexdigest()), "wb") as f:
                f.write(data)
            added += 1
        print(f"{target}: {committed} files kept, {added} added; "
              f"{len(held)} of {len(reachable)} edges held")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
