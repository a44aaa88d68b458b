# Peer side of bench/webgpu.ts: the same measurements with PyTorch + HF transformers on the same GPU.
# Prints one JSON object. Run by bench/webgpu.ts (--peer) in the same session, or by hand:
#   python3 bench/peer_hf.py [--quick] [--bundled models/tiny-llama]
import json, sys, time

import torch

quick = '--quick' in sys.argv
bundled = sys.argv[sys.argv.index('--bundled') + 1] if '--bundled' in sys.argv else 'models/tiny-llama'
out = {'device': torch.cuda.get_device_name(0), 'torch': torch.__version__}
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def sync():
    torch.cuda.synchronize()


# fp32 matmul, TF32 off
mm = {}
for n in ([4096] if quick else [4096, 8192]):
    a = torch.randn(n, n, device='cuda'); b = torch.randn(n, n, device='cuda')
    for _ in range(3): torch.matmul(a, b)
    sync(); reps = 10 if n == 4096 else 4
    t = time.perf_counter()
    for _ in range(reps): torch.matmul(a, b)
    sync(); dt = (time.perf_counter() - t) / reps
    mm[str(n)] = 2 * n ** 3 / dt / 1e12
    del a, b
out['matmul_tflops'] = mm

# device-to-device copy bandwidth (bytes read + written)
x = torch.empty(256 * 2 ** 20, dtype=torch.float32, device='cuda'); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
sync(); t = time.perf_counter()
for _ in range(20): y.copy_(x)
sync(); dt = (time.perf_counter() - t) / 20
out['copy_gbps'] = 2 * x.numel() * 4 / dt / 1e9
del x, y

from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

models = {}


def measure(name, model):
    model.eval()
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, V, (1, 32), generator=g).cuda()
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)  # warm-up
        sync(); t = time.perf_counter()
        new = 32 if quick else 128
        model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        sync(); dec = new / (time.perf_counter() - t)
        long = torch.randint(0, V, (1, 512), generator=g).cuda()
        model(long); sync(); t = time.perf_counter()
        reps = 3
        for _ in range(reps): model(long, logits_to_keep=1)
        sync(); pre = reps * 512 / (time.perf_counter() - t)
        # Decoding deep into the context, as bench/webgpu.ts does: the last `new` positions of at most
        # 2,048. generate() also runs the prompt's forward pass, timed alone and taken off.
        L = min(2048, model.config.max_position_embeddings) - new - 1
        lp = torch.randint(0, V, (1, L), generator=g).cuda()
        model(lp, logits_to_keep=1); sync(); t = time.perf_counter()
        model(lp, logits_to_keep=1); sync(); tp = time.perf_counter() - t
        t = time.perf_counter()
        model.generate(lp, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        sync(); dec_long = (new - 1) / (time.perf_counter() - t - tp)
    models[name] = {'decode_tok_s': dec, 'prefill_tok_s': pre, 'decode_long_tok_s': dec_long, 'long_from': L,
                    'params': sum(p.numel() for p in model.parameters())}


with torch.no_grad():
    m = AutoModelForCausalLM.from_pretrained(bundled, dtype=torch.bfloat16, attn_implementation='eager').cuda()
    measure('tiny-llama', m); del m
    shapes = {'125M': dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12, intermediate_size=2048),
              '1B': dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, intermediate_size=8192)}
    for name, s in shapes.items():
        if quick and name == '1B': continue
        cfg = LlamaConfig(vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False, **s)
        cfg._attn_implementation = 'eager'
        torch.manual_seed(0)
        m = LlamaForCausalLM(cfg).to(dtype=torch.float16).cuda()
        measure(name, m); del m
        torch.cuda.empty_cache()
out['models'] = models
print(json.dumps(out))
