#!/usr/bin/env python3
"""Turns YOOCHOOSE clicks (TSV SessionId, ItemId, Time in unix seconds, with a header)
into the files `spoor eval sessions` reads, for a second data set beside Diginetica:

    bench/yoochoose_sessions.py ../shared/data/yoochoose-100k /tmp/yc
    spoor eval sessions --train /tmp/yc/train_sessions.txt --test /tmp/yc/test_prefixes.tsv

Sessions are ordered by their first click, each session's clicks by time. Training
sessions of one click are dropped (they have no next item); test sessions keep only items
seen in training, and every prefix of each becomes a case, as in Diginetica's split.
"""
import os
import sys


def sessions(path):
    clicks = {}
    with open(path, encoding="utf-8") as lines:
        next(lines)  # header
        for line in lines:
            session, item, at = line.rstrip("\n").split("\t")
            clicks.setdefault(session, []).append((float(at), item))
    ordered = sorted((sorted(c)[0][0], [item for _, item in sorted(c)]) for c in clicks.values())
    return [items for _, items in ordered]


def main(source, target):
    os.makedirs(target, exist_ok=True)
    train = sessions(os.path.join(source, "yoochoose-clicks-100k_train_full.txt"))
    test = sessions(os.path.join(source, "yoochoose-clicks-100k_test.txt"))
    known = {item for session in train for item in session}
    with open(os.path.join(target, "train_sessions.txt"), "w", encoding="utf-8") as out:
        for session in train:
            if len(session) > 1:
                out.write(" ".join(session) + "\n")
    cases = 0
    with open(os.path.join(target, "test_prefixes.tsv"), "w", encoding="utf-8") as out:
        for session in test:
            kept = [item for item in session if item in known]
            for end in range(1, len(kept)):
                out.write(" ".join(kept[:end]) + "\t" + kept[end] + "\n")
                cases += 1
    print(f"{len(train)} training sessions, {len(test)} test sessions, {cases} test cases")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: yoochoose_sessions.py SOURCE_DIR TARGET_DIR")
    main(sys.argv[1], sys.argv[2])
