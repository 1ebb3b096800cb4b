"""Internals of the SynthOcc generator (public API: reidlib.data.synthocc).

canvas: vectorised anti-aliased drawing; identity: attributes and look-alike families; person: the
pedestrian renderer and its body-part labels; scene: cameras; occluders: objects and pedestrians in front;
protocols: which image goes where; render: one image with its ground truth.
"""
