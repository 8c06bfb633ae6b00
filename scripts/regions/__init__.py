"""Where each loss applies: label tables, the regularisation mask (0 Jacobian, 1 rigid, 2 sliding) and the sliding
normals, from a segmentation (or a CT's bones from its HU alone).

- ``labels``: label tables (TotalSegmentator v2, Learn2Reg) and the region constants;
- ``masks``, ``normals``: segmentation -> mask; the unit normals of a sliding interface;
- ``cavity``: sliding along the whole wall of the body cavities (the refinement's regions);
- ``label_free``: regions with no segmentation: a CT's bones by HU, the band where a first field shears;
- ``memo``: the last results of the regions' pure functions of whole arrays (the wall search's shared closing);
- ``segment``, ``precompute``: CLIs: TotalSegmentator without download; masks and normals to disk.

May import: scripts.io.
"""
