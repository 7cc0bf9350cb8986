"""Square attack (Andriushchenko et al., ECCV 2020): score-based random search on the budget's boundary.

No gradients: each iteration proposes one candidate per unfinished sample that changes the current
perturbation inside a random window, queries the model once, and keeps the candidate when the
objective L (maximised) rises or the goal is reached:

    delta_{k+1} = candidate  if L(x + candidate) > L(x + delta_k) or success,  else delta_k.

The window covers a fraction p(k) of the input, halved at iterations 10, 50, 200, 500, 1000, 2000,
4000, 6000 and 8000 of a 10,000-query run; other budgets rescale the iteration as AutoAttack does.

Linf: start from vertical stripes of +-eps; a candidate sets its window to +-eps, one sign per channel.
L2: start from a 5x5 tiling of bumps scaled to norm eps; a candidate moves the mass of a second
window into the first and adds a fresh bump there, keeping the total norm at eps (see ``_mass_moving``).

Every input is viewed through its spec's grid (B, C, T, H, W) (``InputSpec.to_grid``), whose windows
span H x W and are shared by all channels and frames: for images T = 1, for video a window is one
spatio-temporal tube through all frames, for a waveform (C = T = H = 1) a contiguous run of samples.
The spec also says how a window is shaped (``window``: a rectangle, or a random subset of W positions
for unordered point clouds) and whether an L2 budget bounds each position (``per_point_budget``: each
point moves by at most eps) instead of the whole sample; nothing here asks which modality it runs.
"""

from __future__ import annotations

import math

import torch

from bindguard.attacks.base import Attack, BestTracker, Forward
from bindguard.attacks.threat import ThreatModel
from bindguard.errors import ConfigError
from bindguard.modalities import InputSpec
from bindguard.objectives import Objective, ObjectiveContext

# The paper's halving points, in iterations of a reference run of REFERENCE_QUERIES queries.
HALVING_ITERATIONS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
REFERENCE_QUERIES = 10_000
DEFAULT_P_INIT = {"linf": 0.8, "l2": 0.3}
L2_TILES = 5  # the L2 start tiles each window axis into this many bumps
RESAMPLE_ATTEMPTS = 10  # redraws of a Linf window's signs when the draw would change nothing


def square_fraction(iteration: int, queries: int, p_init: float) -> float:
    """The fraction p of the input that a window covers at ``iteration`` of a ``queries``-query run.

    p = p_init / 2^h, with h the number of halving points below the iteration rescaled to 10,000 queries.
    """
    scaled = iteration if queries == REFERENCE_QUERIES else int(iteration / queries * REFERENCE_QUERIES)
    return p_init / 2 ** sum(scaled > point for point in HALVING_ITERATIONS)


def bump(rows: int, cols: int) -> torch.Tensor:
    """(rows, cols) nested centred rectangles, ring r weighted 1 / (r + 1)^2, unit L2 norm (the paper's M)."""
    pattern = torch.zeros(rows, cols)
    centre_row, centre_col = rows // 2, cols // 2
    for ring in range(max(centre_row, centre_col) + 1):
        top, left = max(centre_row - ring, 0), max(centre_col - ring, 0)
        pattern[top : centre_row + ring + 1, left : centre_col + ring + 1] += 1.0 / (ring + 1) ** 2
    return pattern / pattern.norm()


def eta(rows: int, cols: int, split_axis: int) -> torch.Tensor:
    """(rows, cols) the paper's L2 window pattern: a positive bump and a negative one side by side, unit norm.

    The window is split in halves along ``split_axis`` (0: rows, 1: columns); a 1-wide axis cannot be split.
    """
    if split_axis == 1:
        return eta(cols, rows, 0).T.contiguous()
    if rows < 2:
        return bump(rows, cols)
    halves = (bump(rows // 2, cols), -bump(rows - rows // 2, cols))
    pattern = torch.cat(halves, dim=0)
    return pattern / pattern.norm()


class Square(Attack):
    """The Square attack under Linf or L2, on any raw layout, using forward passes only.

    Args:
        threat: norm (``linf`` or ``l2``) and relative budget.
        objective: the per-sample loss to maximise and its success test (default: zero-shot CE).
        queries: forward passes per sample and restart, the starting point's included (AutoAttack: 5000).
        p_init: fraction of the input the first windows cover, in (0, 1]; default 0.8 (Linf) or 0.3 (L2).
        restarts: independent runs from fresh random starts for the samples not yet beaten.
        seed: seeds every random draw (starts, windows, signs).
    """

    name = "square"
    uses_gradients = False

    def __init__(
        self,
        threat: ThreatModel,
        *,
        objective: Objective | None = None,
        queries: int = 1000,
        p_init: float | None = None,
        restarts: int = 1,
        seed: int = 0,
    ):
        super().__init__(threat, objective=objective, seed=seed)
        if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
            raise ConfigError(f"queries must be an integer >= 1, got {queries!r}")
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
            raise ConfigError(f"restarts must be an integer >= 1, got {restarts!r}")
        p_init = DEFAULT_P_INIT[threat.norm] if p_init is None else p_init
        if isinstance(p_init, bool) or not isinstance(p_init, (int, float)) or not 0 < p_init <= 1:
            raise ConfigError(
                f"p_init must be a number in (0, 1] (the fraction of the input a window covers), got {p_init!r}"
            )
        self.queries, self.p_init, self.restarts = queries, float(p_init), restarts

    def _perturb(
        self, forward: Forward, x: torch.Tensor, spec: InputSpec, context: ObjectiveContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        best = BestTracker(x)
        # the clean point competes too, so a sample left unbeaten never ends below its clean loss
        loss, success = self._evaluate(forward, x, context)
        best.update(x, loss, success)
        passes = x.shape[0]
        for _ in range(self.restarts):
            active = torch.arange(x.shape[0], device=x.device)[~best.success]
            if active.numel() == 0:
                break
            adversarial, loss, success, spent = self._search(
                forward, x[active], spec, context.subset(active), generator
            )
            best.update_at(active, adversarial, loss, success)
            passes += spent
        return best.x, passes

    def _evaluate(
        self, forward: Forward, x: torch.Tensor, context: ObjectiveContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            embedding = forward(x)
            return self.objective.loss(embedding, context), self.objective.success(embedding, context)

    def _search(
        self,
        forward: Forward,
        clean: torch.Tensor,
        spec: InputSpec,
        context: ObjectiveContext,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """One run of random search; returns (adversarial, loss, success, forward passes)."""
        delta = self._start(clean, spec, generator)
        loss, success = self._evaluate(forward, clean + delta, context)
        passes = clean.shape[0]
        for iteration in range(self.queries - 1):
            todo = (~success).nonzero().squeeze(1)  # only unbeaten samples spend queries
            if todo.numel() == 0:
                break
            fraction = square_fraction(iteration, self.queries, self.p_init)
            candidate = self._candidate(clean[todo], delta[todo], spec, fraction, generator)
            new_loss, new_success = self._evaluate(forward, clean[todo] + candidate, context.subset(todo))
            passes += todo.numel()
            accept = new_success | (new_loss > loss[todo])
            kept = todo[accept]
            delta[kept], loss[kept], success[kept] = candidate[accept], new_loss[accept], new_success[accept]
        return clean + delta, loss, success, passes

    # --- starting points ---------------------------------------------------------------------

    def _start(self, clean: torch.Tensor, spec: InputSpec, generator: torch.Generator) -> torch.Tensor:
        """A starting perturbation on the boundary of the budget, brought into the domain."""
        grid = spec.to_grid(clean)
        count, channels, _, height, width = grid.shape
        budget = self.threat.absolute(spec)
        if self.threat.norm == "linf":
            # vertical stripes: one sign per channel and column, shared by rows and frames
            start = budget * _random_signs((count, channels, 1, 1, width), generator, clean)
        elif spec.per_point_budget:
            # the L2 budget is per point: move every point by eps in a random direction
            start = budget * _unit_directions((count, channels, 1, 1, width), generator, clean)
        else:
            # bumps repeat through every frame; the whole perturbation is then scaled to norm eps
            start = _tiled_bumps(count, channels, height, width, generator, clean).expand_as(grid)
            start = budget * start / start.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1, 1)
        start = start.expand_as(grid)
        return self.threat.project(clean, spec.from_grid(start), spec)

    # --- candidates --------------------------------------------------------------------------

    def _candidate(
        self, clean: torch.Tensor, delta: torch.Tensor, spec: InputSpec, fraction: float, generator: torch.Generator
    ) -> torch.Tensor:
        """A new perturbation that differs from ``delta`` inside one random window per sample."""
        if self.threat.norm == "l2" and not spec.per_point_budget:
            grid = self._mass_moving(spec.to_grid(delta), self.threat.absolute(spec), fraction, generator)
            return self.threat.project(clean, spec.from_grid(grid), spec)
        return self._constant_window(clean, delta, spec, fraction, generator)

    def _window_size(self, fraction: float, height: int, width: int) -> tuple[int, int]:
        """(rows, columns) of a window covering about ``fraction`` of an H x W plane (1 x length when H = 1).

        L2 windows hold the two-bump pattern, so they are at least 3 wide and of odd side, as in the paper.
        """
        two_bumps = self.threat.norm == "l2"
        if height == 1:
            return 1, _fit(round(fraction * width), width, two_bumps)
        side = round(math.sqrt(fraction * height * width))
        return _fit(side, height, two_bumps), _fit(side, width, two_bumps)

    def _window_mask(
        self, shape: torch.Size, fraction: float, spec: InputSpec, generator: torch.Generator, like: torch.Tensor
    ) -> torch.Tensor:
        """(B, 1, 1, H, W) one random window per sample: a rectangle, or a subset of W positions.

        A spec declares ``window="subset"`` when its positions are stored in no particular order (point
        clouds), so that a contiguous run of them would carry no locality.
        """
        count, _, _, height, width = shape
        if spec.window == "subset":
            chosen = max(round(fraction * width), 1)
            return _random_subset(count, width, chosen, generator, like).view(count, 1, 1, 1, width)
        return _random_windows(count, height, width, self._window_size(fraction, height, width), generator, like)[0]

    def _window_vector(
        self, count: int, channels: int, budget: float, generator: torch.Generator, like: torch.Tensor
    ) -> torch.Tensor:
        """(count, C, 1, 1, 1) the value a window takes: +-eps per channel (Linf) or eps along a random direction (L2)."""
        shape = (count, channels, 1, 1, 1)
        if self.threat.norm == "linf":
            return budget * _random_signs(shape, generator, like)
        return budget * _unit_directions(shape, generator, like)

    def _constant_window(
        self, clean: torch.Tensor, delta: torch.Tensor, spec: InputSpec, fraction: float, generator: torch.Generator
    ) -> torch.Tensor:
        """Set the window to one vertex of the budget per sample (Linf, and L2 where the budget is per point).

        A draw that would leave the perturbation unchanged (the window already holds it) is redrawn,
        as in the paper, so no query is wasted on a repeat.
        """
        grid = spec.to_grid(delta)
        mask = self._window_mask(grid.shape, fraction, spec, generator, delta)
        budget = self.threat.absolute(spec)
        vector = self._window_vector(grid.shape[0], grid.shape[1], budget, generator, delta)

        def fill(which: torch.Tensor | slice) -> torch.Tensor:
            changed = torch.where(mask[which], vector[which], grid[which])
            return self.threat.project(clean[which], spec.from_grid(changed), spec)

        candidate = fill(slice(None))
        for _ in range(RESAMPLE_ATTEMPTS):
            same = (candidate - delta).flatten(1).abs().amax(1) <= 1e-4 * budget
            if not bool(same.any()):
                break
            vector[same] = self._window_vector(int(same.sum()), grid.shape[1], budget, generator, delta)
            candidate[same] = fill(same)
        return candidate

    def _mass_moving(
        self, delta: torch.Tensor, budget: float, fraction: float, generator: torch.Generator
    ) -> torch.Tensor:
        """The paper's L2 update on a (B, C, T, H, W) grid, keeping ||delta||_2 at the budget eps.

        With W1 the window to change, W2 a second window whose mass moves into W1, and per channel c:

            v_c = eta * s_c + delta_c[W1] / ||delta_c[W1]||,   s_c = +-1 at random,
            delta_c[W1 u W2] <- 0,
            delta_c[W1] <- v_c / ||v_c|| * sqrt((eps^2 - ||delta||^2) / C + ||delta_c[W1 u W2]||^2).

        Summed over channels the new norm is eps^2 exactly: what W2 held plus any slack moves into W1.
        """
        count, channels, frames, height, width = delta.shape
        reduce = (2, 3, 4)
        rows, cols = self._window_size(fraction, height, width)
        first, tops, lefts = _random_windows(count, height, width, (rows, cols), generator, delta)
        second = _random_windows(count, height, width, (rows, cols), generator, delta)[0]
        first, union = first.to(delta.dtype), (first | second).to(delta.dtype)
        pattern = eta(rows, cols, _split_axis(rows, cols, generator, delta)).to(delta)
        # the pattern repeats through every frame; 1/sqrt(T) keeps each channel's copy at unit norm
        placed = _place(pattern, tops, lefts, height, width).view(count, 1, 1, height, width) / math.sqrt(frames)
        signs = _random_signs((count, channels, 1, 1, 1), generator, delta)
        window_norm = (delta * first).square().sum(reduce, keepdim=True).sqrt()
        union_norm = (delta * union).square().sum(reduce, keepdim=True).sqrt()
        total = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)
        moved = placed * signs + delta * first / (window_norm + 1e-12)
        size = ((budget**2 - total.square()).clamp(min=0) / channels + union_norm.square()).sqrt()
        moved = moved / moved.square().sum(reduce, keepdim=True).sqrt().clamp(min=1e-12) * size
        return delta * (1 - union) + moved


def _random_signs(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    signs = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (2 * signs - 1).to(like.dtype)


def _unit_directions(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Random unit vectors along axis 1 (the channels, or a point's coordinates)."""
    direction = torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
    return direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _random_windows(
    count: int, height: int, width: int, size: tuple[int, int], generator: torch.Generator, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One rectangle of ``size`` per sample, uniformly placed: (mask (B, 1, 1, H, W), top rows (B,), left columns (B,))."""
    rows, cols = size
    tops = torch.randint(0, height - rows + 1, (count,), generator=generator, device=like.device)
    lefts = torch.randint(0, width - cols + 1, (count,), generator=generator, device=like.device)
    ones = torch.ones(size, dtype=like.dtype, device=like.device)
    mask = _place(ones, tops, lefts, height, width) > 0
    return mask.view(count, 1, 1, height, width), tops, lefts


def _random_subset(count: int, size: int, chosen: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """(count, size) masks, each selecting ``chosen`` positions uniformly at random."""
    order = torch.rand((count, size), generator=generator, device=like.device).argsort(dim=1)
    mask = torch.zeros((count, size), dtype=torch.bool, device=like.device)
    return mask.scatter_(1, order[:, :chosen], True)


def _place(pattern: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H, W) zeros holding ``pattern`` (rows, cols) at each sample's (top, left)."""
    count, (rows, cols) = tops.shape[0], pattern.shape
    canvas = torch.zeros((count, height, width), dtype=pattern.dtype, device=pattern.device)
    row_index = tops[:, None, None] + torch.arange(rows, device=pattern.device)[None, :, None]
    col_index = lefts[:, None, None] + torch.arange(cols, device=pattern.device)[None, None, :]
    batch_index = torch.arange(count, device=pattern.device)[:, None, None]
    canvas[batch_index, row_index, col_index] = pattern
    return canvas


def _tiled_bumps(
    count: int, channels: int, height: int, width: int, generator: torch.Generator, like: torch.Tensor
) -> torch.Tensor:
    """(B, C, 1, H, W) the paper's L2 start: the plane tiled L2_TILES x L2_TILES with eta patterns of random sign."""
    start = torch.zeros((count, channels, 1, height, width), dtype=like.dtype, device=like.device)
    tile_rows, tile_cols = max(height // L2_TILES, 1), max(width // L2_TILES, 1)
    # as many whole tiles as fit (L2_TILES on planes of 5 pixels or more), centred
    first_row, first_col = height % tile_rows // 2, width % tile_cols // 2
    for top in range(first_row, height - tile_rows + 1, tile_rows):
        for left in range(first_col, width - tile_cols + 1, tile_cols):
            pattern = eta(tile_rows, tile_cols, _split_axis(tile_rows, tile_cols, generator, like)).to(like)
            signs = _random_signs((count, channels, 1, 1, 1), generator, like)
            start[..., top : top + tile_rows, left : left + tile_cols] += signs * pattern
    return start


def _fit(length: int, limit: int, two_bumps: bool) -> int:
    """A window length of at least 1 (3 and odd for the two-bump pattern), at most ``limit``."""
    if two_bumps:
        length = max(length, 3)
        length += length % 2 == 0
    return min(max(length, 1), limit)


def _split_axis(rows: int, cols: int, generator: torch.Generator, like: torch.Tensor) -> int:
    """A random axis along which to split a window into two bumps (the paper's random transpose); never a 1-wide one."""
    axis = int(torch.randint(0, 2, (1,), generator=generator, device=like.device))
    return axis if (rows, cols)[axis] > 1 else 1 - axis
