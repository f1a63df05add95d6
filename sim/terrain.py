"""Terrain: flat ground, slopes, rough heightfields and stairs, with a friction.

Every terrain but `flat` is a heightfield that starts flat for `flat_run_m` ahead of
its origin, so a robot spawned (or standing) at the origin meets the feature while
walking, and a terrain changed mid-episode is rebuilt under the robot's feet without
moving it.

A heightfield is a window of LENGTH_M x WIDTH_M onto a terrain that goes on forever:
`GroundBuilder.follow` moves the window with a robot that nears its edge (sim-in-the-loop
and scenarios, which run as long as their user wants), keeping every height it already had.
Training does not follow: an episode that reaches the edge ends there (`LocomotionEnv.step`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet

from metaloco.sim.tasks import TerrainSpec

CELL_M = 0.05
"""Heightfield resolution."""
LENGTH_M = 24.0
WIDTH_M = 8.0
BEHIND_M = 4.0
"""How far the heightfield reaches behind its origin."""
FLAT_RUN_M = 0.6
"""Flat ground ahead of the origin before the feature starts."""
STAIR_TREAD_M = 0.4
SENTINEL_M = 15.0
"""Height of the two corner cells that pin a heightfield's bounds (see GroundBuilder)."""
FOLLOW_MARGIN_M = 1.5
"""`GroundBuilder.follow` moves the window once the base is this close to its edge: the cells that change
are then at least this far from the robot (a leg reaches about 0.3 m)."""


@dataclass
class Ground:
    """A terrain in a pybullet world."""

    body: int
    spec: TerrainSpec
    origin: tuple[float, float]
    """Where the terrain starts (its flat run begins here)."""
    heights: np.ndarray | None = None
    """Heightfield grid [x, y] in metres (None for flat), of the window laid now."""
    window: tuple[int, int] = (0, 0)
    """Where the window is, in cells from `origin`: the grid's cell [i, j] lies at world
    origin + (window + (i, j)) * CELL_M - (BEHIND_M, WIDTH_M / 2)."""
    noise: np.ndarray | None = None
    """Rough terrain: the window's noise before the blur (what `follow` keeps and extends)."""
    base_z: float = 0.0
    """World height of the terrain's flat start: 0 at a reset; a terrain changed mid-episode starts at the
    height of the ground the robot stood on, so a robot on a slope's top is not dropped to (or buried under) z = 0."""

    def window_origin(self) -> tuple[float, float]:
        """The world (x, y) the window is laid around (the terrain's origin until it moved)."""
        return self.origin[0] + self.window[0] * CELL_M, self.origin[1] + self.window[1] * CELL_M

    def inside(self, x: float, y: float, margin: float = 0.0) -> bool:
        """Whether (x, y) is on this ground, at least `margin` from its edge (flat ground has none)."""
        if self.heights is None:
            return True
        ox, oy = self.window_origin()
        dx, dy = x - ox, y - oy
        return (-BEHIND_M + margin <= dx <= LENGTH_M - BEHIND_M - margin
                and abs(dy) <= WIDTH_M / 2 - margin)

    def height_at(self, x: float, y: float) -> float:
        """Ground height under (x, y)."""
        if self.heights is None:
            return self.base_z
        ox, oy = self.window_origin()
        i = int(round((x - ox + BEHIND_M) / CELL_M))
        j = int(round((y - oy + WIDTH_M / 2) / CELL_M))
        i = min(max(i, 0), self.heights.shape[0] - 1)
        j = min(max(j, 0), self.heights.shape[1] - 1)
        return float(self.heights[i, j])


GRID_SHAPE = (int(LENGTH_M / CELL_M), int(WIDTH_M / CELL_M))
"""Cells of a heightfield window, (along x, along y)."""


def height_grid(spec: TerrainSpec, rng: np.random.Generator) -> np.ndarray | None:
    """The heightfield of a terrain, relative to its origin (None for flat ground)."""
    if spec.type == "flat":
        return None
    return window_heights(spec, 0, _draw_noise(spec, rng, GRID_SHAPE))


def _draw_noise(spec: TerrainSpec, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray | None:
    """Rough terrain's noise before the blur, for `shape` cells (None for the other terrains, which draw none)."""
    if spec.type != "rough":
        return None
    return rng.uniform(-0.5, 0.5, size=shape) * spec.roughness_m


def window_heights(spec: TerrainSpec, window_x: int, noise: np.ndarray | None) -> np.ndarray:
    """The heights of a window whose origin is `window_x` cells ahead of the terrain's origin (`Ground.window`).

    Slopes and stairs are functions of the distance from the terrain's origin; rough ground is `noise`
    (the window's, drawn before the blur) blurred, flat for FLAT_RUN_M past the origin.
    """
    nx, ny = GRID_SHAPE
    x = (np.arange(nx) + window_x) * CELL_M - BEHIND_M
    ahead = np.clip(x - FLAT_RUN_M, 0.0, None)
    if spec.type == "slope":
        profile = np.tan(np.deg2rad(spec.slope_deg)) * ahead
        return np.repeat(profile[:, None], ny, axis=1)
    if spec.type == "steps":
        profile = np.floor(ahead / STAIR_TREAD_M) * spec.step_height_m
        return np.repeat(profile[:, None], ny, axis=1)
    # A 2x2 box blur keeps bumps foot-sized instead of cell-sized spikes.
    blurred = (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) + np.roll(np.roll(noise, 1, 0), 1, 1)) / 2.0
    blurred[x < FLAT_RUN_M, :] = 0.0
    return blurred


def shifted_noise(noise: np.ndarray, shift: tuple[int, int], fresh: np.ndarray) -> np.ndarray:
    """A window's noise moved `shift` cells: the cells both windows share keep their values, and the cells
    the move uncovers take theirs from `fresh` (a grid of the window's shape)."""
    nx, ny = noise.shape
    out = fresh.copy()
    si, sj = shift
    src_i, dst_i = slice(max(si, 0), nx + min(si, 0)), slice(max(-si, 0), nx - max(si, 0))
    src_j, dst_j = slice(max(sj, 0), ny + min(sj, 0)), slice(max(-sj, 0), ny - max(sj, 0))
    out[dst_i, dst_j] = noise[src_i, src_j]
    return out


class GroundBuilder:
    """Keeps one plane and one heightfield per world and reshapes them in place.

    pybullet never frees a heightfield's memory (removing its body and shape leaks tens of MB
    each time), so the heightfield is created once and later terrains overwrite its heights.
    A replaced heightfield keeps the vertical centring and bounds of its first data, so every
    grid carries two sentinel cells in its far back corners, at -SENTINEL_M and +SENTINEL_M
    around the window's base height: the bounds never change, the centre sits at that height (0 until
    the window moves), and the robot never goes near them.
    """

    def __init__(self, client: int):
        self.client = client
        shape = pybullet.createCollisionShape(pybullet.GEOM_PLANE, physicsClientId=client)
        self.plane = pybullet.createMultiBody(0, shape, basePosition=[0, 0, 0], physicsClientId=client)
        self.field_shape: int | None = None
        self.field_body: int | None = None

    def build(self, spec: TerrainSpec, origin: tuple[float, float], rng: np.random.Generator,
              base_z: float = 0.0) -> Ground:
        """Make `spec` the ground, its flat start at world (x, y) `origin` and height `base_z`."""
        c = self.client
        if spec.type == "flat":
            pybullet.resetBasePositionAndOrientation(self.plane, [0, 0, base_z], [0, 0, 0, 1], physicsClientId=c)
            if self.field_body is not None:
                pybullet.resetBasePositionAndOrientation(self.field_body, [0, 0, base_z - 100.0], [0, 0, 0, 1],
                                                         physicsClientId=c)
            body = self.plane
            ground = Ground(body=body, spec=spec, origin=origin, base_z=base_z)
        else:
            noise = _draw_noise(spec, rng, GRID_SHAPE)
            ground = Ground(body=-1, spec=spec, origin=origin, heights=window_heights(spec, 0, noise) + base_z,
                            noise=noise, base_z=base_z)
            body = self._lay(ground, base_z=base_z)
            # The plane drops out of the way (downhill and rough terrain go below their start).
            pybullet.resetBasePositionAndOrientation(self.plane, [0, 0, base_z - 100.0], [0, 0, 0, 1],
                                                     physicsClientId=c)
        pybullet.changeDynamics(body, -1, lateralFriction=spec.friction, physicsClientId=c)
        return ground

    def follow(self, ground: Ground, x: float, y: float, rng: np.random.Generator) -> Ground:
        """`ground`, or once (x, y) is within FOLLOW_MARGIN_M of its edge, its window moved to centre on (x, y).

        The cells the old and new windows share keep their heights; the others continue the terrain (a slope
        keeps climbing, stairs keep their treads, rough ground draws new noise from `rng`).
        """
        if ground.heights is None or ground.inside(x, y, FOLLOW_MARGIN_M):
            return ground
        ox, oy = ground.window_origin()
        shift = (int(round((x - ox) / CELL_M)), int(round((y - oy) / CELL_M)))
        window = (ground.window[0] + shift[0], ground.window[1] + shift[1])
        noise = None
        if ground.noise is not None:
            noise = shifted_noise(ground.noise, shift, _draw_noise(ground.spec, rng, GRID_SHAPE))
        moved = Ground(body=ground.body, spec=ground.spec, origin=ground.origin,
                       heights=window_heights(ground.spec, window[0], noise) + ground.base_z, window=window,
                       noise=noise, base_z=ground.base_z)
        i0, j0 = int(round(BEHIND_M / CELL_M)), GRID_SHAPE[1] // 2
        self._lay(moved, base_z=float(moved.heights[i0, j0]))  # the window's own heights stay within the sentinels
        return moved

    def _lay(self, ground: Ground, base_z: float) -> int:
        """Write `ground`'s window into the one heightfield of this world, its heights `base_z` above the field's."""
        c = self.client
        local = ground.heights - base_z
        nx, ny = local.shape
        local[0, 0], local[0, ny - 1] = -SENTINEL_M, SENTINEL_M
        # pybullet's heightfield is indexed with x fastest: data[i + j * nx] = local[i, j].
        data = local.T.reshape(-1).tolist()
        kwargs = dict(meshScale=[CELL_M, CELL_M, 1.0], heightfieldData=data, numHeightfieldRows=nx,
                      numHeightfieldColumns=ny, physicsClientId=c)
        if self.field_shape is None:
            self.field_shape = pybullet.createCollisionShape(pybullet.GEOM_HEIGHTFIELD, **kwargs)
            self.field_body = pybullet.createMultiBody(0, self.field_shape, physicsClientId=c)
        else:
            pybullet.createCollisionShape(pybullet.GEOM_HEIGHTFIELD, replaceHeightfieldIndex=self.field_shape,
                                          **kwargs)
        # pybullet centres a heightfield on its bounds, which the sentinels fix at base_z.
        ox, oy = ground.window_origin()
        centre = (ox - BEHIND_M + (nx - 1) * CELL_M / 2, oy - WIDTH_M / 2 + (ny - 1) * CELL_M / 2, base_z)
        pybullet.resetBasePositionAndOrientation(self.field_body, centre, [0, 0, 0, 1], physicsClientId=c)
        ground.body = self.field_body
        return self.field_body


def set_friction(client: int, ground: Ground, friction: float) -> None:
    """Change the ground's friction in place (feet have friction 1, and pybullet multiplies the two)."""
    pybullet.changeDynamics(ground.body, -1, lateralFriction=friction, physicsClientId=client)
    ground.spec.friction = friction
