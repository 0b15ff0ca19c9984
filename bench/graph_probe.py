"""Which settings cuda_graphed can capture (a probe for the GPU machine): python bench/graph_probe.py I."""
import sys

import torch

from rims_core import RIM, cuda_graphed

CASES = [
    ("small eval", dict(input_size=8, hidden_size=24, num_units=3, top_k=2), False, (12, 4, 8)),
    ("small train", dict(input_size=8, hidden_size=24, num_units=3, top_k=2), True, (12, 4, 8)),
    ("small train p=0", dict(input_size=8, hidden_size=24, num_units=3, top_k=2,
                             input_attention={"dropout": 0.0}, comm={"dropout": 0.0}), True, (12, 4, 8)),
    ("paper eval", dict(input_size=10, hidden_size=600), False, (100, 64, 10)),
    ("paper train", dict(input_size=10, hidden_size=600), True, (100, 64, 10)),
]
for name, kw, train, shape in CASES[int(sys.argv[1]):int(sys.argv[1]) + 1]:
    torch.manual_seed(0)
    rim = RIM(**kw).cuda().train(train)
    x = torch.randn(*shape, device="cuda")
    try:
        run = cuda_graphed(rim, x)
        out, _ = run(x)
        ref, _ = rim(x)
        print(name, "ok", float((out - ref).abs().max()) if not train else "")
    except Exception as e:
        print(name, "FAILED", type(e).__name__, str(e).splitlines()[0][:150])
        torch.cuda.synchronize()
