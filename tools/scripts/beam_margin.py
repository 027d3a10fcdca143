"""How far a transformers beam search is from a tie: the smallest gap, over every step, between the accumulated
log-probabilities on either side of a boundary where beam search decides something.

A beam fixture is a fair test of another engine only if its outcome does not hinge on a near-tie: two engines whose
log-probabilities agree within e per step can rank two candidates differently after t steps only when the
candidates' accumulated scores are within 2·e·t. On random-weight models such ties are common (the four beams'
continuations crowd together), so the fixture scripts measure the margin of every beam search they record and
choose inputs whose margin clears the bound the Rust test relies on (`min_margin` in the fixture's reference.json).
The margin is per generated token (a gap after t tokens divided by t; a gap between returned hypotheses, whose
scores are already divided by their length, as it is), so it compares directly with 2·e·2: two scores each off
by at most e per token.

The boundaries, following transformers' `_beam_search` (top 2k candidates by accumulated log-prob, the best k that
do not end become the running beams, those among the top k that end are finished):
- rank k-1 vs rank k over all candidates (which candidates may finish);
- rank k-1 vs rank k over the candidates that do not end in EOS (which become the running beams);
- rank 2k-1 vs rank 2k, when an EOS candidate is among the top 2k (which candidates are kept at all);
- consecutive returned hypotheses (their order).

Use: pass `BeamRecorder(...)` in `logits_processor=[...]` to `generate`; it only reads the log-probabilities.
"""

import math

import torch
from transformers import LogitsProcessor


class BeamRecorder(LogitsProcessor):
    def __init__(self, num_beams: int, eos_ids):
        self.k = num_beams
        self.eos = torch.tensor(sorted(set(eos_ids)))
        self.accumulated = {}  # prefix (tuple of ids) -> accumulated log-prob, for every candidate seen
        self.step_margins = []

    def __call__(self, input_ids, scores):
        # input_ids: [k, cur_len] running sequences; scores: [k, vocab] this step's log-probs (before accumulation).
        seen = set()
        prefixes, accs = [], []
        for row, seq in enumerate(input_ids.tolist()):
            p = tuple(seq)
            if p in seen:
                continue  # the first step: every row is the prompt, only the first one is live (the rest are -1e9)
            seen.add(p)
            prefixes.append(p)
            accs.append(self.accumulated.get(p, 0.0) + scores[row].double())
        acc = torch.stack(accs)  # [live beams, vocab]
        vocab = acc.shape[1]
        for i, p in enumerate(prefixes):
            for v, s in enumerate(acc[i].tolist()):
                self.accumulated[p + (v,)] = s
        flat = acc.flatten()
        order = flat.argsort(descending=True)
        s = flat[order]
        ends = torch.isin(order % vocab, self.eos)
        k = self.k
        gaps = [float(s[k - 1] - s[k])]
        running = s[~ends]
        gaps.append(float(running[k - 1] - running[k]))
        if bool(ends[: 2 * k].any()):
            gaps.append(float(s[2 * k - 1] - s[2 * k]))
        # -inf against -inf (a forced token: every other candidate is banned) decides nothing
        gaps = [g for g in gaps if not math.isnan(g)] or [math.inf]
        self.step_margins.append(min(gaps) / (len(self.step_margins) + 1))
        return scores

    def margin(self, sequences_scores) -> float:
        """The smallest per-token gap over all steps and between consecutive returned hypotheses' scores."""
        final = [float(a - b) for a, b in zip(sequences_scores[:-1], sequences_scores[1:])]
        return min(self.step_margins + final)
