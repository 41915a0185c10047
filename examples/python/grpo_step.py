"""One GRPO step of a small torch model with grpokit's operators in place of the usual loss.

    python examples/python/grpo_step.py          # after: pip install --no-build-isolation ./python

A toy policy (an embedding and an LM head) samples G completions for each of P prompts; the reward
is the fraction of completion tokens equal to the prompt's "answer" token. grpokit computes the
group advantages and the loss (PPO clip, k3 KL to the reference, entropy bonus) from the logits of
the sampled tokens; autograd carries grad · dlogits into the model, and the optimizer steps. The
same loss is also computed in plain PyTorch as a check of the numbers.
"""
import torch

import grpokit_torch as gk

torch.manual_seed(0)
V, D, P, G, L = 50, 32, 4, 6, 5  # vocabulary, width, prompts, rollouts per prompt, completion length


class Policy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V, D)
        self.head = torch.nn.Linear(D, V)

    def forward(self, tokens):  # next-token logits at every position: [N, L, V]
        return self.head(torch.tanh(self.embed(tokens).cumsum(1)))


policy = Policy()
reference = Policy()
reference.load_state_dict(policy.state_dict())
optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)

# rollouts: each prompt is one token, its answer another; sample L tokens per completion
prompts = torch.randint(0, V, (P,))
answers = (prompts * 7 + 3) % V
tokens = prompts.repeat_interleave(G)[:, None]
with torch.no_grad():
    for _ in range(L):
        probs = torch.softmax(policy(tokens)[:, -1], -1)
        tokens = torch.cat([tokens, torch.multinomial(probs, 1)], 1)
completion = tokens[:, 1:]                                   # [P G, L]
rewards = (completion == answers.repeat_interleave(G)[:, None]).double().mean(1)

# grpokit: group advantages, then the loss from the logits of the sampled positions (packed)
adv = gk.compute_advantages(rewards, torch.arange(0, P * G + 1, G)).adv
seq_offsets = torch.arange(0, P * G * L + 1, L)
targets = completion.reshape(-1)
with torch.no_grad():
    logp_old = torch.log_softmax(policy(tokens[:, :-1]), -1).reshape(-1, V).gather(1, targets[:, None]).squeeze(1)
    logp_ref = torch.log_softmax(reference(tokens[:, :-1]), -1).reshape(-1, V).gather(1, targets[:, None]).squeeze(1)
logits = policy(tokens[:, :-1]).reshape(-1, V)
out = gk.fused_loss(logits, targets, seq_offsets, adv.float(), logp_old=logp_old, logp_ref=logp_ref, kl="k3",
                    kl_coef=0.01, entropy_coef=0.001)

# the same loss in plain PyTorch (verl's PPO clip with the dual clip, k3, entropy; token mean)
lp = torch.log_softmax(logits.double(), -1)
logp = lp.gather(1, targets[:, None]).squeeze(1)
A = adv.repeat_interleave(L)
ratio = torch.exp(logp - logp_old.double())
clipped = torch.maximum(-A * ratio, -A * ratio.clamp(0.8, 1.2))
pg = torch.where(A < 0, torch.minimum(clipped, -3 * A), clipped)
d = (logp_ref.double() - logp).clamp(-20, 20)
plain = (pg + 0.01 * (torch.exp(d) - d - 1).clamp(-10, 10) + 0.001 * (lp.exp() * lp).sum(-1)).mean()

optimizer.zero_grad()
out.loss.backward()
optimizer.step()
m = gk.metrics_dict(out.metrics)
print(f"reward mean {rewards.mean().item():.4f}  loss {out.loss.item():.6f} (plain PyTorch {plain.item():.6f})")
print(f"tokens {m['tokens']:.0f}  entropy {m['entropy_mean']:.4f}  kl_ref {m['kl_ref']:.2e}  "
      f"clip_frac {m['clip_frac_low'] + m['clip_frac_high']:.3f}")
assert abs(out.loss.item() - plain.item()) <= 1e-5 * (1 + abs(plain.item())), "grpokit and PyTorch disagree"
