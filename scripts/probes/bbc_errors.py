"""Probe (issue 2): which BBC test articles TF-IDF + LR (as mtc eval fits it) and each bundle get wrong.

    python scripts/probes/bbc_errors.py BUNDLE [BUNDLE ...]   (the split comes from the first bundle)
"""
import sys, torch
torch.set_num_threads(1)
from mtl.bundle import load_bundle
from mtl.config import load_config
from mtl.data import load_examples
from mtl.data.splits import split_examples
cfg = load_config(f"{sys.argv[1]}/config.yaml")
sp = split_examples(load_examples(cfg.task("topic"), cfg.base_dir), cfg.split)
from mtl.baselines import tfidf_lr_classifier
m = tfidf_lr_classifier(len(sp.train)).fit([e.text for e in sp.train], [e.label for e in sp.train])
tf = m.predict([e.text for e in sp.test])
print("tfidf miss", [(i, sp.test[i].label, tf[i]) for i in range(len(sp.test)) if tf[i] != sp.test[i].label])
for p in sys.argv[1:]:
    b = load_bundle(p)
    pr = [r["topic"]["label"] for r in b.predict([e.text for e in sp.test], ["topic"])]
    print(p, "miss", [(i, sp.test[i].label, pr[i]) for i in range(len(sp.test)) if pr[i] != sp.test[i].label])
