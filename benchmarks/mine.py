"""Hard-negative mining side by side: ``jaxsbert.mining.mine_hard_negatives`` vs sentence-transformers'
``util.mine_hard_negatives`` on STSb pairs with all-MiniLM-L6-v2 (top sampling, a margin and a range).

    python -m benchmarks.mine                       # STSb train pairs (5,749; corpus: their 5,600 positives)
    python -m benchmarks.mine --split test --num-negatives 5

Wall time from the loaded model to the mined dataset (encoding the corpus and the anchors, exact top-k,
filtering), each framework in turn in this process, and how many (anchor, positive) rows got the same
negatives.
"""
from __future__ import annotations

import argparse
import time

from benchmarks.common import machine_description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="train")
    parser.add_argument("--num-negatives", type=int, default=3)
    parser.add_argument("--range-min", type=int, default=2)
    parser.add_argument("--absolute-margin", type=float, default=0.02)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives as st_mine

    from jaxsbert.data import load_dataset
    from jaxsbert.encoder import SentenceEncoder
    from jaxsbert.mining import mine_hard_negatives
    from jaxsbert.models.bundled import resolve_model

    print(machine_description())
    path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    ds = load_dataset({"source": "stsb", "split": args.split, "columns": ["sentence1", "sentence2"]})
    options = dict(num_negatives=args.num_negatives, range_min=args.range_min, absolute_margin=args.absolute_margin,
                   output_format="n-tuple")
    results = {}
    for name in ("jaxsbert", "sentence-transformers"):
        if name == "jaxsbert":
            model = SentenceEncoder.from_pretrained(path)
            t = time.perf_counter()
            mined = mine_hard_negatives(ds, model, batch_size=args.batch_size, progress=False, **options)
        else:
            model = SentenceTransformer(path, device="cpu")
            t = time.perf_counter()
            mined = st_mine(ds, model, batch_size=args.batch_size, verbose=False, **options)
        results[name] = (time.perf_counter() - t, mined)
        print(f"{name}: {results[name][0]:.1f} s, {len(mined)} rows", flush=True)
    key = lambda m: {(a, p): tuple(m[f"negative_{j}"][i] for j in range(1, args.num_negatives + 1))
                     for i, (a, p) in enumerate(zip(m["sentence1"], m["sentence2"]))}
    ours, theirs = key(results["jaxsbert"][1]), key(results["sentence-transformers"][1])
    same = sum(ours.get(k) == v for k, v in theirs.items())
    (t_ours, _), (t_st, _) = results["jaxsbert"], results["sentence-transformers"]
    print(f"\nSTSb {args.split}: {len(ds)} pairs; same negatives for {same} of {len(theirs)} rows "
          f"({100 * same / max(len(theirs), 1):.2f}%); wall time jaxsbert {t_ours:.1f} s, sentence-transformers "
          f"{t_st:.1f} s ({t_st / t_ours:.2f}x)")


if __name__ == "__main__":
    main()
