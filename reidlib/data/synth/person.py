"""Draw a synthetic pedestrian from front, back or side, writing body-part labels as it paints.

Geometry is a walking stick figure in fractions of the body height `u` (head top = 0, soles = 1) fleshed out
with capsules (limbs), ellipses (head, feet) and trapezoids (torso, pelvis, skirt). Labels follow
PARSING_LABELS: the person's *own* left and right, so in a front view the left arm is on the image's right.
Viewpoint-dependent attributes: a logo is printed on the front only; a backpack shows whole from the back,
as a bump from the side and as straps from the front; long hair covers the upper back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reidlib.data.synth.canvas import Canvas, Patch, checks, stripes
from reidlib.data.synth.identity import (
    BAG_COLOURS,
    HAIR_COLOURS,
    LOWER_COLOURS,
    SHOE_COLOURS,
    SKIN_TONES,
    UPPER_COLOURS,
    Identity,
    colour,
)

HEAD, TORSO, LEFT_ARM, RIGHT_ARM, LEFT_LEG, RIGHT_LEG, LEFT_FOOT, RIGHT_FOOT = range(1, 9)
ARM = {"left": LEFT_ARM, "right": RIGHT_ARM}
LEG = {"left": LEFT_LEG, "right": RIGHT_LEG}
FOOT = {"left": LEFT_FOOT, "right": RIGHT_FOOT}
VIEWPOINTS = ("front", "back", "side")
FAR_SIDE_DIMMING = 0.82  # limbs on the far side of a side view are in the body's shadow


@dataclass(frozen=True)
class Pose:
    """Where and how one identity is drawn in one image."""

    viewpoint: str  # front | back | side
    facing: int  # side views: +1 walks towards the image's right, -1 towards its left
    phase: float  # walking-cycle phase, radians
    height: float  # body height in pixels (head top to soles)
    cx: float  # column of the body's centre line
    foot_y: float  # row of the soles
    light: float = 1.0  # brightness of the clothes in this image (fabric under changing light)


def sample_pose(rng: np.random.Generator, viewpoint: str, height: float, cx: float, foot_y: float) -> Pose:
    return Pose(
        viewpoint=viewpoint,
        facing=1 if rng.random() < 0.5 else -1,
        phase=float(rng.uniform(0, 2 * math.pi)),
        height=height,
        cx=cx,
        foot_y=foot_y,
        light=float(rng.uniform(0.9, 1.1)),
    )


def image_side(viewpoint: str, person_side: str) -> int:
    """+1 when the person's `person_side` ("left"/"right") limb is drawn on the image's right (front/back)."""
    sign = 1 if person_side == "left" else -1
    return sign if viewpoint == "front" else -sign


def _limb(p0, angle: float, length: float):
    """End point of a limb hanging from p0 (y, x) at `angle` from the vertical (positive towards +x)."""
    return (p0[0] + length * math.cos(angle), p0[1] + length * math.sin(angle))


class _Painter:
    """Colours and textures of one identity in one image, bound to a canvas."""

    def __init__(self, canvas: Canvas, ident: Identity, pose: Pose, top: float):
        self.c, self.id, self.pose, self.u = canvas, ident, pose, pose.height
        tint = np.asarray(ident.tint, np.float32) * pose.light
        self.skin = colour(SKIN_TONES, ident.skin)
        self.hair = colour(HAIR_COLOURS, ident.hair_colour)
        self.upper = np.clip(colour(UPPER_COLOURS, ident.upper_colour) * tint, 0, 1)
        self.upper2 = np.clip(colour(UPPER_COLOURS, ident.upper_second) * tint, 0, 1)
        self.lower = np.clip(colour(LOWER_COLOURS, ident.lower_colour) * tint, 0, 1)
        self.lower2 = np.clip(colour(LOWER_COLOURS, ident.lower_second) * tint, 0, 1)
        self.shoe = colour(SHOE_COLOURS, ident.shoe_colour) * pose.light
        self.bag = colour(BAG_COLOURS, ident.bag_colour) * pose.light
        self.hat = np.clip(colour(UPPER_COLOURS, ident.hat_colour) * tint, 0, 1)
        period = max(0.045 * self.u, 2.0)
        self.upper_tex = {
            "stripes": stripes(self.upper, self.upper2, top, period),
            "checks": checks(self.upper, self.upper2, top, pose.cx, period * 1.3),
        }.get(ident.upper_pattern)
        self.lower_tex = {
            "stripes": stripes(self.lower, self.lower2, pose.cx, period * 0.8, vertical=True),
            "checks": checks(self.lower, self.lower2, top, pose.cx, period * 1.3),
        }.get(ident.lower_pattern)

    def paint(self, patch, col, label, texture=None, dim: float = 1.0, shading: float = 0.3):
        if texture is not None and dim != 1.0:
            base = texture
            texture = lambda p: base(p) * dim  # noqa: E731
        self.c.paint(patch, col * dim, label, texture=texture, shading=shading)


def draw_person(canvas: Canvas, ident: Identity, pose: Pose) -> None:
    """Paint `ident` in `pose` on `canvas` (labels 1..8 on the body, 0 under a carried handbag)."""
    u, view = pose.height, pose.viewpoint
    side_view = view == "side"
    f = pose.facing
    hs, build = ident.head_size, ident.build
    s = math.sin(pose.phase)

    # ---- skeleton (fractions of u; y down from the head top) ----
    head_ry, head_rx = 0.062 * hs, (0.052 if side_view else 0.048) * hs
    head_cy = head_ry
    shoulder_y = 2 * head_ry + 0.04
    ankle_y = 0.962
    hip_y = ankle_y - 0.44 * ident.leg_ratio
    thigh = shin = (ankle_y - hip_y) / 2
    sw = (0.062 if side_view else 0.105) * build  # shoulder half width
    hw = (0.058 if side_view else 0.078) * build  # hip half width
    r_arm, r_fore, r_hand = 0.027 * build, 0.022 * build, 0.022
    r_thigh, r_shin = 0.042 * build, 0.031 * build

    legs = {}  # person side -> (hip, knee, ankle, image sign) in fractions, x relative to the centre line
    for side in ("left", "right"):
        if side_view:
            near = (side == "right") == (f == 1)  # facing right shows the right flank
            swing = 0.36 * s * (1 if near else -1)
            knee_bend = 0.55 if swing > 0 else 1.35
            hip = (hip_y, 0.0)
            knee = _limb(hip, f * swing, thigh)
            ankle = _limb(knee, f * swing * knee_bend, shin)
            legs[side] = (hip, knee, ankle, near)
        else:
            sign = image_side(view, side)
            lift = 0.05 * max(0.0, s if side == "left" else -s)  # a slightly bent leg in the walking cycle
            hip = (hip_y, sign * hw * 0.52)
            knee = (hip_y + thigh * (1 - lift), sign * (hw * 0.55 + 0.004))
            ankle = (knee[0] + shin * (1 - lift), sign * (hw * 0.5 + 0.008))
            legs[side] = (hip, knee, ankle, sign)
    sole = max(a[0] for _, _, a, _ in legs.values()) + 0.038
    top = pose.foot_y - u * sole  # the lowest sole touches foot_y

    def P(y: float, x: float):  # fractions -> canvas pixels
        return (top + y * u, pose.cx + x * u)

    pt = _Painter(canvas, ident, pose, top)
    c = canvas

    # ---- parts as closures, drawn in a viewpoint-dependent order ----
    def draw_leg(side: str, dim: float = 1.0):
        hip, knee, ankle, _ = legs[side]
        label = LEG[side]
        trouser = ident.lower_type == "trousers"
        thigh_col = pt.lower if ident.lower_type != "skirt" else pt.skin
        thigh_tex = pt.lower_tex if ident.lower_type != "skirt" else None
        shin_col = pt.lower if trouser else pt.skin
        pt.paint(
            c.capsule(P(*knee), P(*ankle), r_shin * u * (1.1 if trouser else 0.9), r_shin * u * 0.85),
            shin_col,
            label,
            pt.lower_tex if trouser else None,
            dim,
        )
        pt.paint(
            c.capsule(P(*hip), P(*knee), r_thigh * u, r_shin * u * 1.05), thigh_col, label, thigh_tex, dim
        )

    def draw_foot(side: str, dim: float = 1.0):
        ankle = legs[side][2]
        if side_view:
            patch = c.ellipse(*P(ankle[0] + 0.018, ankle[1] + f * 0.026), 0.02 * u, 0.05 * u)
        else:
            patch = c.ellipse(*P(ankle[0] + 0.02, ankle[1]), 0.021 * u, 0.032 * u * math.sqrt(build))
        pt.paint(patch, pt.shoe, FOOT[side], dim=dim, shading=0.2)

    def draw_pelvis():
        """Waist and crotch of the lower garment (a skirt when the identity wears one), split into the two
        leg labels along the centre line (the near leg's in a side view)."""
        if ident.lower_type == "skirt":
            knee_y = hip_y + thigh * 1.05
            patch_args = (
                P(hip_y - 0.035, 0)[0],
                P(knee_y, 0)[0],
                pose.cx,
                pose.cx,
                hw * u * 1.05,
                hw * u * 1.55,
            )
        else:
            patch_args = (
                P(hip_y - 0.04, 0)[0],
                P(hip_y + 0.07, 0)[0],
                pose.cx,
                pose.cx,
                hw * u * 1.02,
                hw * u * 1.06,
            )
        whole = c.trapezoid(*patch_args)
        if whole is None:
            return
        for side in ("left", "right"):
            if side_view:
                if not legs[side][3]:
                    continue
                patch = whole
            else:
                right_half = whole.xx >= pose.cx
                keep = right_half if legs[side][3] > 0 else ~right_half
                patch = Patch(whole.ys, whole.xs, whole.yy, whole.xx, whole.cover * keep, whole.shade)
            pt.paint(patch, pt.lower, LEG[side], pt.lower_tex, shading=0.25)

    def draw_torso():
        y0, y1 = P(shoulder_y - 0.012, 0)[0], P(hip_y, 0)[0]
        pt.paint(c.trapezoid(y0, y1, pose.cx, pose.cx, sw * u, hw * u * 1.02), pt.upper, TORSO, pt.upper_tex)
        if ident.upper_pattern == "logo" and view == "front":
            cy, cx = P(shoulder_y + 0.09, 0)
            r = 0.034 * u
            shape = {
                "disc": lambda: c.ellipse(cy, cx, r, r),
                "square": lambda: c.box(cy - r, cy + r, cx - r, cx + r, radius=0.2 * r),
                "bar": lambda: c.box(cy - 0.45 * r, cy + 0.45 * r, cx - sw * u * 0.9, cx + sw * u * 0.9),
            }
            pt.paint(shape[ident.logo_shape](), pt.upper2, TORSO, shading=0.1)

    def arm_points(side: str):
        if side_view:
            near = (side == "right") == (f == 1)
            swing = 0.42 * s * (-1 if near else 1)  # arms swing against the legs
            shoulder = (shoulder_y + r_arm, -f * 0.01)
            elbow = _limb(shoulder, f * swing, 0.165)
            wrist = _limb(elbow, f * (swing + 0.3), 0.15)
            return shoulder, elbow, wrist, near
        sign = image_side(view, side)
        out = 0.07 + 0.03 * (s if side == "left" else -s)
        shoulder = (shoulder_y + r_arm, sign * (sw - r_arm * 0.7))
        elbow = _limb(shoulder, sign * out, 0.165)
        wrist = _limb(elbow, sign * out * 0.5, 0.15 * (1 - 0.08 * abs(s)))
        return shoulder, elbow, wrist, sign

    def draw_arm(side: str, dim: float = 1.0):
        shoulder, elbow, wrist, _ = arm_points(side)
        label = ARM[side]
        fore_col = pt.upper if ident.sleeves == "long" else pt.skin
        fore_tex = pt.upper_tex if ident.sleeves == "long" else None
        pt.paint(
            c.capsule(P(*elbow), P(*wrist), r_fore * u, r_fore * u * 0.9), fore_col, label, fore_tex, dim
        )
        pt.paint(
            c.capsule(P(*shoulder), P(*elbow), r_arm * u, r_fore * u), pt.upper, label, pt.upper_tex, dim
        )
        hand = _limb(wrist, 0.0, r_hand * 0.8)
        pt.paint(c.ellipse(*P(*hand), r_hand * u, r_hand * u * 0.85), pt.skin, label, dim=dim, shading=0.15)

    def draw_head():
        cy, cx = P(head_cy, 0)
        ry, rx = head_ry * u, head_rx * u
        pt.paint(
            c.capsule(P(head_cy + 0.5 * head_ry, 0), P(shoulder_y - 0.01, 0), 0.018 * u),
            pt.skin,
            HEAD,
            shading=0.1,
        )
        face_cx = cx + (f * 0.006 * u if side_view else 0)
        pt.paint(c.ellipse(cy, face_cx, ry, rx), pt.skin, HEAD, shading=0.2)
        if side_view:
            pt.paint(
                c.ellipse(cy + 0.15 * ry, face_cx + f * rx * 0.95, 0.18 * ry, 0.2 * rx),
                pt.skin,
                HEAD,
                shading=0,
            )
        if ident.hair_style != "bald":
            hair = c.ellipse(cy - 0.02 * u * 0.2, cx, ry * 1.04, rx * 1.06)
            if hair is not None:
                if view == "front":
                    hair.clip(hair.yy < cy - 0.25 * ry)
                elif view == "back":
                    hair.clip(hair.yy < cy + 0.72 * ry)
                else:
                    hair.clip((hair.yy < cy - 0.3 * ry) | ((hair.xx - cx) * f < -0.15 * rx))
                pt.paint(hair, pt.hair, HEAD, shading=0.25)
        if view == "front" and ry > 5:  # eyes only where they span a pixel
            for sx in (-1, 1):
                pt.paint(
                    c.ellipse(cy + 0.05 * ry, cx + sx * 0.42 * rx, 0.12 * ry, 0.13 * rx),
                    np.array([0.12, 0.1, 0.1], np.float32),
                    HEAD,
                    shading=0,
                )
        draw_hat(cy, cx, ry, rx)

    def draw_long_hair(over_back: bool):
        if ident.hair_style != "long":
            return
        y0, y1 = P(head_cy, 0)[0], P(shoulder_y + (0.1 if over_back else 0.05), 0)[0]
        if side_view:
            x0 = pose.cx - f * head_rx * u * 1.1
            patch = c.box(y0, y1, min(x0, pose.cx), max(x0, pose.cx), radius=0.02 * u)
        else:
            half = head_rx * u * (1.05 if over_back else 1.2)
            patch = c.box(y0, y1, pose.cx - half, pose.cx + half, radius=0.02 * u)
        pt.paint(patch, pt.hair, HEAD, shading=0.25)

    def draw_hat(cy, cx, ry, rx):
        if ident.hat == "none":
            return
        crown = c.ellipse(cy - 0.05 * ry, cx, ry * 1.06, rx * 1.1)
        if crown is None:
            return
        cut = cy - (0.2 if ident.hat == "cap" else 0.05) * ry
        pt.paint(crown.clip(crown.yy < cut), pt.hat, HEAD, shading=0.25)
        if ident.hat == "cap":
            if view == "front":
                pt.paint(c.ellipse(cut, cx, 0.16 * ry, rx * 1.12), pt.hat * 0.85, HEAD, shading=0.1)
            elif side_view:
                pt.paint(
                    c.ellipse(cut, cx + f * rx * 1.0, 0.14 * ry, rx * 0.75), pt.hat * 0.85, HEAD, shading=0.1
                )
        else:  # beanie: a folded band
            pt.paint(
                c.box(cut - 0.22 * ry, cut + 0.05 * ry, cx - rx * 1.08, cx + rx * 1.08, radius=0.1 * ry),
                pt.hat * 0.85,
                HEAD,
                shading=0.1,
            )

    def draw_bag(stage: str):
        """Bags are drawn at several stages of the painting order; each call draws what belongs to it."""
        kind = ident.bag
        if kind == "backpack":
            w, y0, y1 = 0.075 * build * u, P(shoulder_y + 0.015, 0)[0], P(shoulder_y + 0.2, 0)[0]
            if view == "back" and stage == "over_torso":
                pt.paint(
                    c.box(y0, y1, pose.cx - w, pose.cx + w, radius=0.25 * w), pt.bag, TORSO, shading=0.35
                )
                pt.paint(
                    c.box(
                        y0 + 0.45 * (y1 - y0),
                        y1 - 0.06 * (y1 - y0),
                        pose.cx - 0.7 * w,
                        pose.cx + 0.7 * w,
                        radius=0.2 * w,
                    ),
                    pt.bag * 0.8,
                    TORSO,
                    shading=0.2,
                )
            elif view == "front" and stage == "over_torso":
                for sx in (-1, 1):
                    pt.paint(
                        c.capsule(
                            P(shoulder_y - 0.01, sx * 0.055), P(shoulder_y + 0.17, sx * 0.06), 0.011 * u
                        ),
                        pt.bag,
                        TORSO,
                        shading=0.1,
                    )
            elif side_view and stage == "under_torso":
                back = pose.cx - f * (sw * u + 0.045 * u)
                pt.paint(
                    c.box(y0, y1, min(back, pose.cx), max(back, pose.cx), radius=0.3 * w),
                    pt.bag,
                    TORSO,
                    shading=0.35,
                )
            elif side_view and stage == "over_torso":
                pt.paint(
                    c.capsule(P(shoulder_y - 0.01, -f * 0.01), P(shoulder_y + 0.12, f * 0.02), 0.01 * u),
                    pt.bag,
                    TORSO,
                    shading=0.1,
                )
        elif kind == "shoulder" and stage == "over_torso":
            sx = -1 if view == "back" else 1
            if side_view:
                sx = f
            bag_x = pose.cx + sx * (hw * u * (0.3 if side_view else 1.0) + 0.02 * u)
            pt.paint(
                c.capsule(P(shoulder_y, -sx * sw * 0.7), (P(hip_y - 0.03, 0)[0], bag_x), 0.008 * u),
                pt.bag * 0.8,
                TORSO,
                shading=0,
            )
            y0 = P(hip_y - 0.06, 0)[0]
            pt.paint(
                c.box(y0, y0 + 0.08 * u, bag_x - 0.045 * u, bag_x + 0.045 * u, radius=0.01 * u),
                pt.bag,
                TORSO,
                shading=0.3,
            )
        elif kind == "handbag" and stage == "hand":
            side = "right" if view != "side" else ("right" if f == 1 else "left")
            wrist = arm_points(side)[2]
            hy, hx = P(wrist[0] + 0.03, wrist[1])
            w, h = 0.05 * u, 0.07 * u
            pt.paint(c.box(hy, hy + h, hx - w, hx + w, radius=0.15 * w), pt.bag, 0, shading=0.3)

    # ---- painting order ----
    if side_view:
        near_side = "right" if f == 1 else "left"
        far_side = "left" if f == 1 else "right"
        draw_arm(far_side, FAR_SIDE_DIMMING)
        draw_leg(far_side, FAR_SIDE_DIMMING)
        draw_foot(far_side, FAR_SIDE_DIMMING)
        draw_bag("under_torso")
        draw_long_hair(over_back=False)
        draw_leg(near_side)
        draw_foot(near_side)
        draw_pelvis()
        draw_torso()
        draw_bag("over_torso")
        draw_arm(near_side)
        draw_bag("hand")
        draw_head()
        return
    for side in ("left", "right"):
        draw_leg(side)
        draw_foot(side)
    draw_pelvis()
    if view == "front":
        draw_long_hair(over_back=False)
    draw_torso()
    draw_bag("over_torso")
    if view == "back":
        draw_long_hair(over_back=True)
    for side in ("left", "right"):
        draw_arm(side)
    draw_bag("hand")
    draw_head()
