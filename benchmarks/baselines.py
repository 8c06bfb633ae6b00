"""Classical baselines for the known-motion CT benchmark: elastix B-spline (with / without its rigidity penalty) and
ANTs SyN, each returning a displacement on the FIXED grid in voxels with the bundle's convention
(``warped(x) = moving(x + u(x))``, channel k along array axis k).

Optional dependencies (benchmark extras, not runtime requirements): ``itk-elastix`` and ``antspyx``.

Both toolkits get the arrays with a synthetic geometry: origin 0, identity direction, spacing = the voxel size along
each array axis, and array axis k = the toolkit's axis k. Then a physical point is ``index * spacing`` on both
images, the toolkits' transforms map fixed physical points to moving physical points (``T(x) = x + D(x)``), and
``u_k = D_k / spacing_k``. :func:`check_translation` verifies this exactly on a known translation.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence

import numpy as np

__all__ = ["elastix_bspline", "ants_syn", "check_translation", "available"]


def available() -> dict[str, bool]:
    """Which optional toolkits import."""
    out = {}
    for name, module in (("elastix", "itk"), ("ants", "ants")):
        try:
            mod = __import__(module)
            out[name] = name != "elastix" or hasattr(mod, "elastix_registration_method")
        except ImportError:
            out[name] = False
    return out


def _itk_image(array: np.ndarray, spacing: Sequence[float]):
    import itk

    image = itk.image_from_array(np.ascontiguousarray(np.transpose(array.astype(np.float32), (2, 1, 0))))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([0.0, 0.0, 0.0])
    return image


def elastix_bspline(
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing: Sequence[float],
    rigidity: np.ndarray | None = None,
    grid_mm: float = 12.0,
    resolutions: int = 3,
    iterations: int = 300,
    rigidity_weight: float = 0.1,
    threads: int = 2,
) -> tuple[np.ndarray, float]:
    """elastix B-spline registration (Mattes MI, ASGD), optionally with ``TransformRigidityPenalty`` whose fixed
    rigidity image is ``rigidity`` (X, Y, Z) in [0, 1] (e.g. the bone mask). Returns (ddf (3, X, Y, Z) voxels,
    seconds)."""
    import itk

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(threads)  # (the filter's SetNumberOfThreads segfaults)
    spacing = [float(s) for s in spacing]
    f_img, m_img = _itk_image(fixed, spacing), _itk_image(moving, spacing)
    params = itk.ParameterObject.New()
    pmap = params.GetDefaultParameterMap("bspline", resolutions, grid_mm)
    pmap["MaximumNumberOfIterations"] = [str(iterations)]
    pmap["Transform"] = ["BSplineTransform"]
    pmap["FinalBSplineInterpolationOrder"] = ["1"]
    pmap["WriteResultImage"] = ["false"]
    with tempfile.TemporaryDirectory() as tmp:
        if rigidity is not None:
            path = os.path.join(tmp, "rigidity.mha")
            itk.imwrite(_itk_image(rigidity.astype(np.float32), spacing), path)
            pmap["Registration"] = ["MultiMetricMultiResolutionRegistration"]
            pmap["Metric"] = ["AdvancedMattesMutualInformation", "TransformRigidityPenalty"]
            pmap["Metric0Weight"] = ["1.0"]
            pmap["Metric1Weight"] = [str(rigidity_weight)]
            pmap["FixedRigidityImageName"] = [path]
            pmap["LinearityConditionWeight"] = ["100.0"]
            pmap["OrthonormalityConditionWeight"] = ["1.0"]
            pmap["PropernessConditionWeight"] = ["2.0"]
            pmap["DilateRigidityImages"] = ["false"]
        params.AddParameterMap(pmap)
        start = time.perf_counter()
        elastix = itk.ElastixRegistrationMethod.New(f_img, m_img)
        elastix.SetParameterObject(params)
        elastix.SetLogToConsole(False)
        elastix.UpdateLargestPossibleRegion()
        tparams = elastix.GetTransformParameterObject()
        cwd = os.getcwd()
        os.chdir(tmp)  # transformix writes deformationField.nii into the working directory
        try:
            field = itk.transformix_deformation_field(m_img, tparams)
        finally:
            os.chdir(cwd)
        seconds = time.perf_counter() - start
    disp = np.asarray(itk.array_from_image(field), dtype=np.float64)  # (Z, Y, X, 3) = axes (2, 1, 0), comps 0..2
    ddf = np.stack([np.transpose(disp[..., k], (2, 1, 0)) / spacing[k] for k in range(3)])
    return ddf.astype(np.float32), seconds


def ants_syn(
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing: Sequence[float],
    type_of_transform: str = "SyN",
    threads: int = 2,
    **kwargs,
) -> tuple[np.ndarray, float]:
    """ANTs registration (default ``SyN``: affine + symmetric normalisation, Mattes MI). Returns (ddf (3, X, Y, Z)
    voxels, seconds); the forward transforms are composed into one displacement field on the fixed grid."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    import ants

    spacing = [float(s) for s in spacing]
    geometry = dict(origin=(0.0, 0.0, 0.0), spacing=tuple(spacing), direction=np.eye(3))
    f_img = ants.from_numpy(fixed.astype(np.float32), **geometry)
    m_img = ants.from_numpy(moving.astype(np.float32), **geometry)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        reg = ants.registration(f_img, m_img, type_of_transform=type_of_transform, outprefix=tmp + "/r", **kwargs)
        path = ants.apply_transforms(f_img, m_img, reg["fwdtransforms"], compose=tmp + "/comp")
        field = ants.image_read(path).numpy()  # (X, Y, Z, 3) physical displacement
        seconds = time.perf_counter() - start
    ddf = np.stack([field[..., k] / spacing[k] for k in range(3)])
    return ddf.astype(np.float32), seconds


def check_translation(method: str, shift_vox: Sequence[float] = (2.0, -1.5, 1.0), tol: float = 0.15) -> float:
    """Register a smooth blob image to its copy moved by a known translation and assert that the returned field is
    that translation in the bundle's convention (``moving(x + t) = fixed(x)``). Returns the max error (voxels)."""
    from scipy.ndimage import gaussian_filter, shift

    rng = np.random.default_rng(0)
    shape, spacing = (40, 36, 24), (2.0, 2.5, 3.0)
    fixed = gaussian_filter(rng.normal(size=shape), 2.5)
    fixed = (fixed - fixed.min()) / np.ptp(fixed)
    moving = shift(fixed, shift_vox, order=3, mode="nearest")  # moving(y) = fixed(y - t)  =>  moving(x + t) = fixed(x)
    if method == "elastix":
        ddf, _ = elastix_bspline(fixed, moving, spacing, grid_mm=20.0, resolutions=2, iterations=200)
    elif method == "ants":
        ddf, _ = ants_syn(fixed, moving, spacing, type_of_transform="Translation")
    else:
        raise ValueError(f"method must be 'elastix' or 'ants', got {method!r}")
    core = tuple(slice(6, -6) for _ in range(3))
    err = max(float(np.abs(ddf[k][core] - shift_vox[k]).mean()) for k in range(3))
    if not err < tol:
        raise AssertionError(f"{method} field conversion is wrong: mean error {err:.3f} voxels on a known translation")
    return err
