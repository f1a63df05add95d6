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


@dataclass
class Ground:
    """A terrain in a pybullet world."""

    body: int
    spec: TerrainSpec
    origin: tuple[float, float]
    heights: np.ndarray | None = None
    """Heightfield grid [x, y] in metres (None for flat)."""

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


def build_ground(client: int, spec: TerrainSpec, origin: tuple[float, float], rng: np.random.Generator) -> Ground:
    """Create the ground body for `spec` in a pybullet world.

    Args:
        client: pybullet physics client id.
        spec: The terrain.
        origin: World (x, y) where the flat start area is.
        rng: Random source for rough terrain.

    Returns:
        The new `Ground`.
    """
    heights = height_grid(spec, rng)
    if heights is None:
        shape = pybullet.createCollisionShape(pybullet.GEOM_PLANE, physicsClientId=client)
        body = pybullet.createMultiBody(0, shape, basePosition=[0, 0, 0], physicsClientId=client)
    else:
        nx, ny = heights.shape
        # pybullet's heightfield is indexed column-major as (column=x, row=y) with rows varying slowest.
        data = heights.T.reshape(-1).tolist()
        shape = pybullet.createCollisionShape(
            pybullet.GEOM_HEIGHTFIELD, meshScale=[CELL_M, CELL_M, 1.0], heightfieldData=data,
            numHeightfieldRows=nx, numHeightfieldColumns=ny, physicsClientId=client)
        # pybullet centres a heightfield on its bounding box; shift it so heights are absolute.
        centre = (
            origin[0] - BEHIND_M + (nx - 1) * CELL_M / 2,
            origin[1] - WIDTH_M / 2 + (ny - 1) * CELL_M / 2,
            (heights.max() + heights.min()) / 2,
        )
        body = pybullet.createMultiBody(0, shape, basePosition=centre, physicsClientId=client)
    pybullet.changeDynamics(body, -1, lateralFriction=spec.friction, physicsClientId=client)
    return Ground(body=body, spec=spec, origin=origin, heights=heights)


def set_friction(client: int, ground: Ground, friction: float) -> None:
    """Change the ground's friction in place (feet have friction 1, and pybullet multiplies the two)."""
    pybullet.changeDynamics(ground.body, -1, lateralFriction=friction, physicsClientId=client)
    ground.spec.friction = friction
