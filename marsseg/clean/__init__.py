"""Finding the training rows that are not Mars terrain, each with the rule that caught it.

The course data (and the AI4Mars benchmark built like it) hides a few percent of unrelated
photographs among the terrain images, all carrying one and the same mask. Three rules find such
rows, each switchable in ``clean.rules``:

``embedding`` (image content only)
    Each image becomes a vector of cheap statistics in named groups (``features``): of the whole
    frame (a coarse thumbnail, intensity percentiles, grey-level histogram, gradient energy, local
    variance, contrast-normalised structure of the whole picture and of its lower half, Fourier band
    energies, scattering moments (``scattering``: whether fine detail lies everywhere or clustered along
    outlines and blobs), and the flat areas and straight edges of the lower half) and of part of it (``tiles``:
    the straight border a pasted picture leaves, in grey levels and in texture energy, and the grain, edge sharpness, flat areas, straight
    edges and flat tones of the frame's most atypical 16x16 tiles, each tile compared with the same
    tile of every frame). Every group is standardised to the same total weight (the partial-frame
    groups to 1.5 times that), reduced by PCA (``embedding``) and laid out in 2-D by t-SNE.
    The map *proposes* groups: its connected pieces when neighbouring points are linked up to
    ``group_scales`` times the map's typical neighbour spacing, tried at several scales so that a
    group is found whether it sits close to the terrain or far away, whole or split. Groups holding
    at most ``max_group_fraction`` of the rows are candidates.
    Feature space *confirms* them: t-SNE pulls apart any dense sub-population (real horizon views
    and rover-hardware shots form islands too), so a candidate is removed only when its rows lie off
    the span of the rows outside the group in the standardised features (``space``). A row's nearest
    rows are found by the L4 norm of its distances in the feature groups (a picture unlike terrain in
    one or two groups is not averaged away by the others, where it looks ordinary); its isolation is what
    a ridge-regularised combination of its 40 nearest outside rows leaves unexplained, in units of the
    data set's median such residual, averaged over two views of the features (every group; and the
    texture groups alone, the spectrum and scattering moments weighted twice: ``features.VIEWS``), whose rarest terrain rows
    differ. A rare terrain view is a blend of other views even where none of them is near; a picture
    that is not terrain is not. Score (``isolation``): the group's
    median isolation. A row is removed when that is at least ``min_isolation`` and its own isolation is
    at least ``min_member_isolation`` (which spares a terrain row that the map merely placed next to an
    outlier group). Rows that lie ``min_member_isolation`` or more off their own neighbours' span do not
    span for the others, so outliers of different kinds do not explain each other away. A row needs no
    group when its isolation reaches ``min_lone_isolation`` (no less than ``min_isolation``: one row is
    weaker evidence than a group): t-SNE may lay a lone picture among terrain views, whose low isolation
    then sets its group's median. Rows already caught stop counting as "outside" and isolation is
    measured again, so two outlier groups side by side do not shield each other.
    The test images (at most ``test_references`` of them, a seeded sample) are measured beside the
    training rows as terrain of the same kind: they join the features' scaling, the map and the spans,
    and are never removed. A rare real view (a horizon, rover hardware) has more of its kind among them;
    a picture that is not terrain has none, or forms one group with its like in both sets and is
    found as one (``find.reference_images``).
    Limits: a non-terrain picture whose statistics resemble unusual terrain (a noisy, low-contrast
    scene of flat tones next to hazy, rocky or hardware-filled terrain views, a low-contrast page
    pasted over part of a frame) can stay. ``benchmarks/clean_synthetic.py`` measures it on the
    outlier styles it was developed with and, separately, on styles it never saw (pages, grids,
    portraits, rooms, product shots, whole and pasted over 30-60% of a frame): on generator seeds
    161-190 this rule alone finds 95.7% of them at precision 0.966, and 91.8-94.2% on other seeds
    (whole portraits and grids are what it misses), so keep ``shared_mask`` on with it: all rules find
    99.8% at precision 0.968. ``min_isolation`` (2.5) is set on real data too: real photographs are
    found whole and pasted alike (``benchmarks/clean_real_mix.py``: 98.7-99.1% of them among 700
    AI4Mars terrain rows, at precision 0.987 with all rules), while a threshold the features' real
    tail does not allow costs small real sets their terrain: with the nearest-row distance at 2.5 such
    a set lost 1.6-2.3 of its 700 terrain rows, rare kinds of view (rover hardware, a horizon) with
    no similar rows left there, as far from the rest as an outlier group.
``shared_mask``
    Masks repeated byte for byte in more than ``max_mask_repeats`` rows, unless trivial. Trivial
    masks recur naturally: all background, or fewer than ``min_mask_classes`` labelled classes with
    background only on the frame's outer rim (AI4Mars holds such "all soil / all bedrock" labels with
    an unlabelled first row or column up to 51 times). Any other repeated mask is suspicious, two
    classes or background plus one class alike: background inside the frame draws this frame's
    regions, and real labels do not repeat those dozens of times. Score: how many rows share the mask.
``degenerate``
    Flat images (standard deviation below ``min_image_std`` grey levels), images whose 1st to 99th
    percentile span is below ``min_image_range`` grey levels, and masks that are all background
    (nothing to learn from). Score: the failed checks as a sum of flags, 1 flat image, 2 narrow
    range, 4 empty mask.

A row caught by several rules is reported once per rule and removed once.

Small or odd inputs never end in a traceback; each fallback is announced with a ``CleanWarning``:
with fewer than ``min_embedding_rows`` rows, or when every image has the same features, there is no
t-SNE map (the first two principal components, or zeros, stand in for the picture) and the
``embedding`` rule is skipped; a perplexity too large for the row count is lowered to (rows - 1) / 3;
non-finite feature values are replaced by the column median.
"""
from marsseg.clean.fallback import CleanWarning
from marsseg.clean.find import find_outliers, remove_outliers
from marsseg.clean.report import CleanReport
from marsseg.clean.rules import RULES

__all__ = ["RULES", "CleanReport", "CleanWarning", "find_outliers", "remove_outliers"]
