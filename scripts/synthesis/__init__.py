"""Generated images with known motion: the true field and labels of every case are known.

- ``synthetic``: the paper's two synthetic sets (a rotated rigid bar, two sliding boxes);
- ``phantom``: a CT-like abdominal phantom and deformed real-CT pairs;
- ``breathing``: breathing-like motion on real anatomy (cavity contents sliding along the wall, rigid bones).

May import: scripts.io, scripts.regions, scripts.losses.
"""
