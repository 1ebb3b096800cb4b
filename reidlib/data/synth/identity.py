"""SynthOcc identities: combinable appearance attributes, and families of look-alikes.

An identity is a fixed combination of clothing colours and patterns (upper and lower body), hair, hat,
shoes, bag and body proportions. A *family* is a group of identities that share every attribute but the
ones of one body region (upper body, lower body, shoes, head or bag): telling its members apart needs that
region to be visible, which is what makes part-based matching matter under occlusion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np


def _rgb(hex_colour: str) -> tuple[float, float, float]:
    return tuple(int(hex_colour[i : i + 2], 16) / 255.0 for i in (1, 3, 5))


# Palettes are named so that identities.csv is readable; neighbours (navy/black, khaki/beige) are kept on
# purpose: under a camera's colour cast they are hard to tell apart, as in real footage.
UPPER_COLOURS = {
    "red": "#c0262d",
    "dark_red": "#7a1e24",
    "orange": "#e0782a",
    "yellow": "#e8c63a",
    "green": "#3f8f3a",
    "dark_green": "#2b4d2f",
    "teal": "#2a8c8c",
    "light_blue": "#8cb8e0",
    "blue": "#2f5fb8",
    "navy": "#1f2a4d",
    "purple": "#6a3d8f",
    "pink": "#e08cb0",
    "white": "#e9e9e4",
    "light_gray": "#b4b4b0",
    "gray": "#707070",
    "black": "#232325",
    "brown": "#6b4a2f",
    "beige": "#d6c4a0",
}
LOWER_COLOURS = {
    "black": "#1e1e22",
    "dark_gray": "#3c3c40",
    "gray": "#7c7c80",
    "navy": "#22294a",
    "denim": "#3d5a85",
    "light_denim": "#7d9cc4",
    "khaki": "#b49f74",
    "brown": "#5e4330",
    "olive": "#5b5e36",
    "white": "#e2e2dc",
    "beige": "#cdbb98",
    "red": "#9c2a2a",
}
HAIR_COLOURS = {
    "black": "#1a1614",
    "dark_brown": "#3b2618",
    "brown": "#6e4a2c",
    "blond": "#cfae6a",
    "gray": "#a8a49e",
    "auburn": "#8a3a1e",
}
SKIN_TONES = {
    "light": "#f1cfb4",
    "medium_light": "#dcaa84",
    "medium": "#b98058",
    "tan": "#95623e",
    "dark": "#5e3b26",
}
SHOE_COLOURS = {
    "black": "#1b1b1d",
    "white": "#ececec",
    "brown": "#5a3a22",
    "gray": "#808084",
    "red": "#b3262b",
    "blue": "#2f58a8",
}
BAG_COLOURS = {
    "black": "#202022",
    "brown": "#6a4426",
    "gray": "#6e6e72",
    "navy": "#24305a",
    "red": "#a32a2e",
    "green": "#3d6b3a",
    "beige": "#cbb48e",
}

UPPER_PATTERNS = ("plain", "stripes", "checks", "logo")
LOWER_PATTERNS = ("plain", "stripes", "checks")
LOWER_TYPES = ("trousers", "shorts", "skirt")
SLEEVES = ("long", "short")
HAIR_STYLES = ("short", "long", "bald")
HATS = ("none", "cap", "beanie")
BAGS = ("none", "backpack", "shoulder", "handbag")
LOGO_SHAPES = ("disc", "square", "bar")

# Attribute groups a family member may change, one body region each (the region it needs to be seen).
FAMILY_REGIONS = {
    "upper": ("upper_colour", "upper_second", "upper_pattern", "sleeves"),
    "lower": ("lower_colour", "lower_second", "lower_pattern", "lower_type"),
    "shoes": ("shoe_colour",),
    "head": ("hair_colour", "hair_style", "hat", "hat_colour"),
    "bag": ("bag", "bag_colour"),
}
MAX_RESAMPLES = 50  # tries to draw a look no other identity has (the attribute space is vast: rarely > 1)
FAMILY_REGION_WEIGHTS = {"upper": 0.25, "lower": 0.25, "shoes": 0.15, "head": 0.15, "bag": 0.2}


@dataclass(frozen=True)
class Identity:
    """Attributes of one synthetic person; colours are palette names (see the dictionaries above)."""

    pid: int
    family: int
    skin: str
    hair_colour: str
    hair_style: str
    hat: str
    hat_colour: str
    upper_colour: str
    upper_second: str  # stripe / check / logo colour
    upper_pattern: str
    sleeves: str
    logo_shape: str
    lower_colour: str
    lower_second: str
    lower_pattern: str
    lower_type: str
    shoe_colour: str
    bag: str
    bag_colour: str
    height: float  # relative body height (1 = average)
    build: float  # relative body width
    leg_ratio: float  # relative leg length
    head_size: float
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # small per-identity dye variation of clothing

    def to_row(self) -> dict:
        row = asdict(self)
        row["tint"] = " ".join(f"{v:.3f}" for v in self.tint)
        for key in ("height", "build", "leg_ratio", "head_size"):
            row[key] = f"{row[key]:.3f}"
        return row


def _pick(rng: np.random.Generator, options, p=None):
    keys = list(options)
    return keys[int(rng.choice(len(keys), p=p))]


def _different(rng: np.random.Generator, options, current: str) -> str:
    keys = [k for k in options if k != current]
    return keys[int(rng.integers(len(keys)))]


def sample_identity(rng: np.random.Generator, pid: int = 0, family: int = 0) -> Identity:
    upper = _pick(rng, UPPER_COLOURS)
    lower = _pick(rng, LOWER_COLOURS)
    hat = _pick(rng, HATS, p=[0.7, 0.18, 0.12])
    return Identity(
        pid=pid,
        family=family,
        skin=_pick(rng, SKIN_TONES),
        hair_colour=_pick(rng, HAIR_COLOURS),
        hair_style=_pick(rng, HAIR_STYLES, p=[0.55, 0.35, 0.10]),
        hat=hat,
        hat_colour=_pick(rng, UPPER_COLOURS),
        upper_colour=upper,
        upper_second=_different(rng, UPPER_COLOURS, upper),
        upper_pattern=_pick(rng, UPPER_PATTERNS, p=[0.4, 0.22, 0.18, 0.2]),
        sleeves=_pick(rng, SLEEVES, p=[0.6, 0.4]),
        logo_shape=_pick(rng, LOGO_SHAPES),
        lower_colour=lower,
        lower_second=_different(rng, LOWER_COLOURS, lower),
        lower_pattern=_pick(rng, LOWER_PATTERNS, p=[0.7, 0.15, 0.15]),
        lower_type=_pick(rng, LOWER_TYPES, p=[0.65, 0.2, 0.15]),
        shoe_colour=_pick(rng, SHOE_COLOURS),
        bag=_pick(rng, BAGS, p=[0.4, 0.25, 0.2, 0.15]),
        bag_colour=_pick(rng, BAG_COLOURS),
        height=float(rng.uniform(0.92, 1.04)),
        build=float(rng.uniform(0.85, 1.2)),
        leg_ratio=float(rng.uniform(0.94, 1.06)),
        head_size=float(rng.uniform(0.92, 1.08)),
        tint=tuple(float(v) for v in rng.uniform(0.95, 1.05, size=3)),
    )


def _vary_region(rng: np.random.Generator, base: Identity, region: str) -> Identity:
    """A copy of `base` that differs in (at least) one attribute of `region`."""
    fresh = sample_identity(rng)
    fields = FAMILY_REGIONS[region]
    for _ in range(20):
        changes = {f: getattr(fresh, f) for f in fields if rng.random() < 0.6}
        candidate = replace(base, **changes)
        if any(getattr(candidate, f) != getattr(base, f) for f in fields) and _visible_change(
            candidate, base
        ):
            return candidate
        fresh = sample_identity(rng)
    # fall back to the region's first attribute, which is always visible when the region is
    key = fields[0]
    options = {
        "upper": UPPER_COLOURS,
        "lower": LOWER_COLOURS,
        "shoes": SHOE_COLOURS,
        "head": HAIR_COLOURS,
        "bag": BAG_COLOURS,
    }[region]
    if region == "head":
        return replace(
            base, hair_colour=_different(rng, options, base.hair_colour), hair_style="short", hat="none"
        )
    if region == "bag":
        return replace(base, bag="backpack" if base.bag == "none" else "none")
    return replace(base, **{key: _different(rng, options, getattr(base, key))})


def _visible_change(a: Identity, b: Identity) -> bool:
    """Changes hidden by other attributes do not count (e.g. a new hair colour under a hat on a bald head,
    a new pattern colour on plain clothing, a new bag colour when there is no bag)."""
    if a.hat != b.hat or (a.hat != "none" and a.hat_colour != b.hat_colour):
        return True
    if a.hair_style != b.hair_style or (a.hair_style != "bald" and a.hair_colour != b.hair_colour):
        return True
    if a.upper_colour != b.upper_colour or a.upper_pattern != b.upper_pattern or a.sleeves != b.sleeves:
        return True
    if a.upper_pattern != "plain" and (a.upper_second != b.upper_second or a.logo_shape != b.logo_shape):
        return True
    if a.lower_colour != b.lower_colour or a.lower_pattern != b.lower_pattern or a.lower_type != b.lower_type:
        return True
    if a.lower_pattern != "plain" and a.lower_second != b.lower_second:
        return True
    if a.shoe_colour != b.shoe_colour or a.bag != b.bag:
        return True
    return a.bag != "none" and a.bag_colour != b.bag_colour


def look(ident: Identity) -> tuple:
    """The attributes that make an identity recognisable (everything but its ids and body proportions)."""
    return tuple(v for k, v in asdict(ident).items() if k not in ("pid", "family", "height", "build",
                                                                    "leg_ratio", "head_size", "tint"))


def make_identities(
    rng: np.random.Generator,
    count: int,
    first_pid: int,
    first_family: int,
    family_fraction: float,
    max_family_size: int,
    taken: set | None = None,
) -> list[Identity]:
    """`count` identities with pids first_pid.. ; about `family_fraction` of them belong to families of
    2..max_family_size look-alikes (consecutive pids), the others are singletons. No two identities share a
    look (`taken` carries the looks already used, e.g. by the training identities, and is updated)."""
    taken = set() if taken is None else taken
    out: list[Identity] = []
    family = first_family
    regions = list(FAMILY_REGION_WEIGHTS)
    weights = np.array([FAMILY_REGION_WEIGHTS[r] for r in regions])
    mean_size = (2 + max_family_size) / 2
    # chance that a new group is a family, so that about family_fraction of the identities are in one
    p_family = family_fraction / (mean_size - family_fraction * (mean_size - 1)) if max_family_size > 1 else 0

    def fresh(make):
        for _ in range(MAX_RESAMPLES):
            candidate = make()
            if look(candidate) not in taken:
                taken.add(look(candidate))
                return candidate
        return None

    while len(out) < count:
        left = count - len(out)
        size = 1
        if left >= 2 and rng.random() < p_family:
            size = int(rng.integers(2, min(max_family_size, left) + 1))
        base = fresh(lambda: sample_identity(rng))
        if base is None:
            raise RuntimeError("could not draw a new identity look; lower the number of identities")
        members = [base]
        for _ in range(size - 1):
            region = regions[int(rng.choice(len(regions), p=weights))]
            member = fresh(lambda region=region, base=base: _vary_region(rng, base, region))
            if member is None:
                continue
            # shared body proportions, with a small individual spread
            members.append(replace(member, height=base.height * float(rng.uniform(0.98, 1.02)),
                                   build=base.build * float(rng.uniform(0.97, 1.03))))
        for m in members:
            out.append(replace(m, pid=first_pid + len(out), family=family))
        family += 1
    return out


_ARRAYS: dict[int, dict[str, np.ndarray]] = {}


def colour(table: dict[str, str], name: str) -> np.ndarray:
    """The [3] float32 colour of palette entry `name` (converted once per palette)."""
    arrays = _ARRAYS.get(id(table))
    if arrays is None:
        arrays = _ARRAYS[id(table)] = {k: np.asarray(_rgb(v), np.float32) for k, v in table.items()}
    return arrays[name]
