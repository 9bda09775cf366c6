"""Numerical constants of the triangle-splat rasteriser (spec triangle_splats.md sections 3-6), with reasons."""

TILE_SIZE = (
    16  # footprint tile edge in pixels (spec 5): the binning rule that decides where a triangle renders
)
# Raster tile edge: each (16x16 tile, triangle) pair is refined to the 8x8 sub-tiles that the triangle's pixel
# bounding box touches. Exact (the window is 0 outside the triangle) and it halves the candidates every pixel walks
# for small triangles, on CPU (serial pixels) and CUDA (64-thread blocks, less divergence) alike; 4x4 would
# quadruple the keys to sort for a smaller gain.
RASTER_TILE = 8
BBOX_MARGIN_PX = 1.0  # safety margin of the sub-tile refinement against rounding of the edge tests
# Edge culling of the (raster tile, triangle) pairs (binning.subtile_outside): a pair is dropped only if every pixel
# centre of the 8x8 tile lies strictly outside one edge line, L_k > margin, where the window is exactly 0. Margin
# (pixels, evaluated in float64) = ABS + REL * (|d_k| + x_max + y_max): far above the float32 rounding of the
# raster kernels' L_k = n_x x + n_y y + d (a few ulps of that same magnitude, ulp = 6e-8 relative).
CULL_MARGIN_ABS_PX = 1e-3
CULL_MARGIN_REL = 1e-5
ALPHA_MAX = 0.99  # alpha clamp (spec 4): keeps 1 - alpha >= 0.01 so backward can divide T by (1 - alpha)
ALPHA_MIN = 1.0 / 255.0  # alpha below which a triangle is skipped at a pixel (invisible in 8-bit output)
T_EARLY_STOP = 1e-4  # transmittance below which a ray ends; the triangle that would cross it is not blended
FOOTPRINT_TAU = (
    0.01  # alpha threshold that defines the binned footprint (spec 5; published stopping_influence)
)
MIN_OPACITY = 0.01  # triangles with o below this are culled (same published stopping_influence)
NEAR_Z = 0.2  # near culling on the centroid depth
VERTEX_MIN_Z = 1e-3  # project guard: a vertex closer than this projects through the camera plane -> cull
EDGE_ON_COS = 1e-3  # |cos(normal, view dir)| below this: edge-on, culled
MAX_RADIUS_PX = 1600.0  # triangles with R above this are culled (published kernel)
MIN_RADIUS_PX = 1.0  # triangles with R below this are culled
MIN_INRADIUS_PX = 1.0  # triangles with inradius below this are culled (phi(s) > -1)
NORMAL_NORM_EPS = 1e-4  # clamp of the cross-product norm (and view-ray norm) before normalising
FOOTPRINT_DET_EPS = 1e-3  # skip a pair of shrunk edge lines whose intersection is ill-conditioned
MEDIAN_T = 0.5  # median depth: last blended triangle whose T_before exceeds this
DIST_NEAR = 0.2  # 2DGS distortion depth mapping m = f/(f-n) (1 - n/z): near plane n
DIST_FAR = 100.0  # ... and far plane f
