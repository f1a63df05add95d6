"""Terrain: flat ground, slopes, rough heightfields and stairs, with a friction.

Every terrain but `flat` is a heightfield that starts flat for `flat_run_m` ahead of
its origin, so a robot spawned (or standing) at the origin meets the feature while
walking, and a terrain changed mid-episode is rebuilt under the robot's feet without
moving it.
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


@dataclass
class Ground:
    """A terrain in a pybullet world."""

    body: int
    spec: TerrainSpec
    origin: tuple[float, float]
    heights: np.ndarray | None = None
    """Heightfield grid [x, y] in metres (None for flat)."""

    def inside(self, x: float, y: float, margin: float = 0.0) -> bool:
        """Whether (x, y) is on this ground, at least `margin` from its edge (flat ground has none)."""
        if self.heights is None:
            return True
        dx, dy = x - self.origin[0], y - self.origin[1]
        return (-BEHIND_M + margin <= dx <= LENGTH_M - BEHIND_M - margin
                and abs(dy) <= WIDTH_M / 2 - margin)

    def height_at(self, x: float, y: float) -> float:
        """Ground height under (x, y)."""
        if self.heights is None:
            return 0.0
        i = int(round((x - self.origin[0] + BEHIND_M) / CELL_M))
        j = int(round((y - self.origin[1] + WIDTH_M / 2) / CELL_M))
        i = min(max(i, 0), self.heights.shape[0] - 1)
        j = min(max(j, 0), self.heights.shape[1] - 1)
        return float(self.heights[i, j])


def height_grid(spec: TerrainSpec, rng: np.random.Generator) -> np.ndarray | None:
    """The heightfield of a terrain, relative to its origin (None for flat ground)."""
    if spec.type == "flat":
        return None
    nx, ny = int(LENGTH_M / CELL_M), int(WIDTH_M / CELL_M)
    x = np.arange(nx) * CELL_M - BEHIND_M
    ahead = np.clip(x - FLAT_RUN_M, 0.0, None)
    if spec.type == "slope":
        profile = np.tan(np.deg2rad(spec.slope_deg)) * ahead
        return np.repeat(profile[:, None], ny, axis=1)
    if spec.type == "steps":
        profile = np.floor(ahead / STAIR_TREAD_M) * spec.step_height_m
        return np.repeat(profile[:, None], ny, axis=1)
    noise = rng.uniform(-0.5, 0.5, size=(nx, ny)) * spec.roughness_m
    # A 2x2 box blur keeps bumps foot-sized instead of cell-sized spikes.
    noise = (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) + np.roll(np.roll(noise, 1, 0), 1, 1)) / 2.0
    noise[x < FLAT_RUN_M, :] = 0.0
    return noise


class GroundBuilder:
    """Keeps one plane and one heightfield per world and reshapes them in place.

    pybullet never frees a heightfield's memory (removing its body and shape leaks tens of MB
    each time), so the heightfield is created once and later terrains overwrite its heights.
    A replaced heightfield keeps the vertical centring and bounds of its first data, so every
    grid carries two sentinel cells in its far back corners, at -SENTINEL_M and +SENTINEL_M:
    the bounds never change, the centre stays at z = 0, and the robot never goes near them.
    """

    def __init__(self, client: int):
        self.client = client
        shape = pybullet.createCollisionShape(pybullet.GEOM_PLANE, physicsClientId=client)
        self.plane = pybullet.createMultiBody(0, shape, basePosition=[0, 0, 0], physicsClientId=client)
        self.field_shape: int | None = None
        self.field_body: int | None = None

    def build(self, spec: TerrainSpec, origin: tuple[float, float], rng: np.random.Generator) -> Ground:
        """Make `spec` the ground, its flat start at world (x, y) `origin`."""
        c = self.client
        heights = height_grid(spec, rng)
        if heights is None:
            pybullet.resetBasePositionAndOrientation(self.plane, [0, 0, 0], [0, 0, 0, 1], physicsClientId=c)
            if self.field_body is not None:
                pybullet.resetBasePositionAndOrientation(self.field_body, [0, 0, -100.0], [0, 0, 0, 1],
                                                         physicsClientId=c)
            body = self.plane
        else:
            nx, ny = heights.shape
            heights[0, 0], heights[0, ny - 1] = -SENTINEL_M, SENTINEL_M
            # pybullet's heightfield is indexed with x fastest: data[i + j * nx] = heights[i, j].
            data = heights.T.reshape(-1).tolist()
            kwargs = dict(meshScale=[CELL_M, CELL_M, 1.0], heightfieldData=data, numHeightfieldRows=nx,
                          numHeightfieldColumns=ny, physicsClientId=c)
            if self.field_shape is None:
                self.field_shape = pybullet.createCollisionShape(pybullet.GEOM_HEIGHTFIELD, **kwargs)
                self.field_body = pybullet.createMultiBody(0, self.field_shape, physicsClientId=c)
            else:
                pybullet.createCollisionShape(pybullet.GEOM_HEIGHTFIELD, replaceHeightfieldIndex=self.field_shape,
                                              **kwargs)
            # pybullet centres a heightfield on its bounds, which the sentinels fix at z = 0.
            centre = (
                origin[0] - BEHIND_M + (nx - 1) * CELL_M / 2,
                origin[1] - WIDTH_M / 2 + (ny - 1) * CELL_M / 2,
                0.0,
            )
            pybullet.resetBasePositionAndOrientation(self.field_body, centre, [0, 0, 0, 1], physicsClientId=c)
            # The plane drops out of the way (downhill and rough terrain go below zero).
            pybullet.resetBasePositionAndOrientation(self.plane, [0, 0, -100.0], [0, 0, 0, 1], physicsClientId=c)
            body = self.field_body
        pybullet.changeDynamics(body, -1, lateralFriction=spec.friction, physicsClientId=c)
        return Ground(body=body, spec=spec, origin=origin, heights=heights)


def set_friction(client: int, ground: Ground, friction: float) -> None:
    """Change the ground's friction in place (feet have friction 1, and pybullet multiplies the two)."""
    pybullet.changeDynamics(ground.body, -1, lateralFriction=friction, physicsClientId=client)
    ground.spec.friction = friction
