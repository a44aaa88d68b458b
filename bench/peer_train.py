# Peer for bench/train.ts: training steps/s of HF GPT2LMHeadModel in PyTorch, fp32 with TF32 off and
# dropout off (Brickwork trains without dropout), AdamW, random token batches; with transformers' default
# attention (sdpa) and with eager attention, one after the other. Prints one JSON line.
import argparse, json, time
import torch
from transformers import GPT2Config, GPT2LMHeadModel

p = argparse.ArgumentParser()
for k, d in [("C", 768), ("L", 12), ("H", 12), ("V", 50257), ("T", 1024), ("B", 4), ("steps", 10)]:
    p.add_argument(f"--{k}", type=int, default=d)
a = p.parse_args()
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = "cuda" if torch.cuda.is_available() else "cpu"
cfg = GPT2Config(n_embd=a.C, n_layer=a.L, n_head=a.H, vocab_size=a.V, n_positions=max(a.T, 1024),
                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)

def build(impl):
    """The model with the given attention implementation: sdpa (transformers' default, fused attention
    kernels) or eager (attention probabilities as a T x T tensor)."""
    try:
        m = GPT2LMHeadModel._from_config(cfg, attn_implementation=impl)
    except (TypeError, ValueError, ImportError):
        cfg._attn_implementation = impl
        m = GPT2LMHeadModel(cfg)
    return m.to(dev).float()

g = torch.Generator(device="cpu").manual_seed(1)

def rate(impl):
    torch.manual_seed(1)
    model = build(impl)
    ran = getattr(model.config, "_attn_implementation", impl)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def step():
        x = torch.randint(0, a.V, (a.B, a.T), generator=g).to(dev)
        y = torch.randint(0, a.V, (a.B, a.T), generator=g).to(dev)
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, a.V), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    step()
    if dev == "cuda": torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(a.steps): step()
    if dev == "cuda": torch.cuda.synchronize()
    s = time.perf_counter() - t
    del model, opt
    if dev == "cuda": torch.cuda.empty_cache()
    return a.B * a.T * a.steps / s, ran

sdpa, sdpa_ran = rate("sdpa")
eager, eager_ran = rate("eager")
print(json.dumps({"tokens_per_second": sdpa, "attention": sdpa_ran, "eager_tokens_per_second": eager, "eager_attention": eager_ran,
                  "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__}))
