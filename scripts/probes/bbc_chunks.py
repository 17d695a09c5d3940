"""Probe (issue 2): BBC accuracy when a bundle averages log-probabilities over the first K chunks of
126 tokens of each article (K = 1..4), on the validation and test splits of the bundle's config.

    python scripts/probes/bbc_chunks.py BUNDLE [BUNDLE ...]
"""
import sys, numpy as np, torch
from mtl.bundle import load_bundle
from mtl.config import load_config
from mtl.data import load_examples
from mtl.data.splits import split_examples
torch.set_num_threads(1)
for path in sys.argv[1:]:
    b = load_bundle(path)
    cfg = load_config(f"{path}/config.yaml")
    splits = split_examples(load_examples(cfg.task("topic"), cfg.base_dir), cfg.split)
    labels = b.labels("topic")
    tok = b.tokenizer
    for split in ("validation", "test"):
        ex = getattr(splits, split)
        seqs, owner = [], []
        for i, e in enumerate(ex):
            ids = tok(e.text, add_special_tokens=False)["input_ids"]
            for k in range(4):
                w = ids[k * 126:(k + 1) * 126]
                if not w: break
                seqs.append([tok.cls_token_id] + w + [tok.sep_token_id]); owner.append((i, k))
        probs = []
        for s in range(0, len(seqs), 32):
            outs = b.run_heads(seqs[s:s+32], [["topic"]] * len(seqs[s:s+32]))
            probs += [np.asarray(o["topic"]) for o in outs]
        gold = [labels.index(e.label) if isinstance(e.label, str) else e.label for e in ex]
        res = []
        for K in (1, 2, 3, 4):
            agg = {}
            for (i, k), p in zip(owner, probs):
                if k < K: agg.setdefault(i, []).append(np.log(p + 1e-9))
            pred = [int(np.argmax(np.mean(agg[i], axis=0))) for i in range(len(ex))]
            res.append(round(float(np.mean([p == g for p, g in zip(pred, gold)])), 4))
        print(path, split, "acc with first K=1..4 chunks:", res, flush=True)
