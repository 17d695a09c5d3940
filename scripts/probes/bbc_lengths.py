"""Probe (issue 2): BBC accuracy of a bundle when prediction reads the first 128, 256 or 512 tokens
of each article in one sequence, against averaging the logits of the first K chunks of 126 tokens
(weighted by their token counts: the same as mean-pooling over all chunks' tokens), on the
validation and test splits of the bundle's config. Same weights throughout; only the input changes.

    python scripts/probes/bbc_lengths.py BUNDLE [BUNDLE ...]
"""
import sys, numpy as np, torch
from mtl.bundle import load_bundle
from mtl.config import load_config
from mtl.data import load_examples
from mtl.data.splits import split_examples
from mtl.batching import pad_ids
torch.set_num_threads(2)
def logits(b, seqs):
    out=[]
    for s in range(0, len(seqs), 16):
        ids, mask = pad_ids(seqs[s:s+16], 0)
        with torch.inference_mode():
            out.append(b.model.forward_task("topic", ids, mask).float().numpy())
    return np.concatenate(out)
for path in sys.argv[1:]:
    b = load_bundle(path); cfg = load_config(f"{path}/config.yaml")
    splits = split_examples(load_examples(cfg.task("topic"), cfg.base_dir), cfg.split)
    labels = b.labels("topic"); tok = b.tokenizer
    for split in ("validation", "test"):
        ex = getattr(splits, split)
        gold = np.array([labels.index(e.label) for e in ex])
        res = {}
        for L in (128, 256, 512):
            seqs = [tok(e.text, truncation=True, max_length=L)["input_ids"] for e in ex]
            res[f"single{L}"] = float((logits(b, seqs).argmax(1) == gold).mean())
        for K in (2, 4, 8):
            seqs, owner, n = [], [], []
            for i, e in enumerate(ex):
                ids = tok(e.text, add_special_tokens=False)["input_ids"]
                for k in range(K):
                    w = ids[k*126:(k+1)*126]
                    if not w: break
                    seqs.append([tok.cls_token_id]+w+[tok.sep_token_id]); owner.append(i); n.append(len(w)+2)
            lg = logits(b, seqs); owner=np.array(owner); n=np.array(n,float)
            agg = np.zeros((len(ex), lg.shape[1])); w = np.zeros(len(ex))
            np.add.at(agg, owner, lg*n[:,None]); np.add.at(w, owner, n)
            res[f"chunkmean{K}"] = float(((agg/w[:,None]).argmax(1)==gold).mean())
        print(path, split, {k: round(v,4) for k,v in res.items()}, flush=True)
