"""Visdom's front-end files, installed from the npm registry instead of downloaded from CDNs at server start.

Visdom 0.2.4's server fetches about 20 JavaScript, CSS and font files from unpkg, cdnjs, plot.ly and d3js.org
each time it starts, hangs or crashes without internet, and its page is blank without them. Every one of those
files exists at the same version in an npm package; ``install_assets`` takes them from there (``npm pack``,
which checks the registry's integrity hash), places them where the server looks, and checks that each is there.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cyclegan_culture.errors import UserError


@dataclass(frozen=True)
class Asset:
    package: str          # npm name@version
    member: str           # path inside the package tarball (below 'package/')
    destination: str      # path below visdom's static/ folder


_BOOTSTRAP = "bootstrap@3.3.7"
_MATHJAX = "mathjax@2.7.5"
_GLYPHS = "glyphicons-halflings-regular"

ASSETS: tuple[Asset, ...] = (
    Asset("jquery@3.1.1", "dist/jquery.min.js", "js/jquery.min.js"),
    Asset(_BOOTSTRAP, "dist/js/bootstrap.min.js", "js/bootstrap.min.js"),
    Asset(_BOOTSTRAP, "dist/css/bootstrap.min.css", "css/bootstrap.min.css"),
    *(Asset(_BOOTSTRAP, f"dist/fonts/{_GLYPHS}.{ext}", f"fonts/{_GLYPHS}.{ext}")
      for ext in ("eot", "woff2", "woff", "ttf", "svg")),
    # the name visdom's own downloader gives the svg font; present so that it finds nothing missing
    Asset(_BOOTSTRAP, f"dist/fonts/{_GLYPHS}.svg", f"fonts/{_GLYPHS}.svg#glyphicons_halflingsregular"),
    Asset("react@16.2.0", "umd/react.production.min.js", "js/react-react.min.js"),
    Asset("react-dom@16.2.0", "umd/react-dom.production.min.js", "js/react-dom.min.js"),
    Asset("react-modal@3.1.10", "dist/react-modal.min.js", "js/react-modal.min.js"),
    Asset("plotly.js-dist-min@2.11.1", "plotly.min.js", "js/plotly-plotly.min.js"),
    Asset("sjcl@1.0.7", "sjcl.js", "js/sjcl.js"),
    Asset("layout-bin-packer@1.4.0", "dist/layout-bin-packer.js", "js/layout_bin_packer.js"),
    Asset("layout-bin-packer@1.4.0", "dist/layout-bin-packer.js.map", "js/layout-bin-packer.js.map"),
    Asset("d3@3.5.17", "d3.min.js", "js/d3.v3.min.js"),
    Asset("d3-selection-multi@1.0.1", "build/d3-selection-multi.js", "js/d3-selection-multi.v1.js"),
    Asset("save-svg-as-png@1.4.17", "lib/saveSvgAsPng.js", "js/saveSvgAsPng.js"),
    Asset("react-resizable@1.4.6", "css/styles.css", "css/react-resizable-styles.css"),
    Asset("react-grid-layout@0.16.3", "css/styles.css", "css/react-grid-layout-styles.css"),
    Asset("classnames@2.2.5", "index.js", "fonts/classnames"),
    *(Asset(_MATHJAX, path, f"js/mathjax/2.7.5/{path}") for path in (
        "MathJax.js", "config/Safe.js", "config/TeX-AMS-MML_HTMLorMML.js", "extensions/Safe.js",
        "jax/output/SVG/fonts/TeX/fontdata.js", "jax/output/SVG/jax.js",
        "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js", "jax/output/SVG/config.js")),
)


# visdom 0.2.4 ships only as source, and pip builds it with the newest setuptools, which has no pkg_resources:
# a constraint file that pip passes on to its build environments keeps setuptools below 81 there
VISDOM_INSTALL = ('printf "setuptools<81\\n" > "$PWD/build-constraints.txt" && '
                  'PIP_CONSTRAINT="$PWD/build-constraints.txt" pip install "cyclegan-culture[visdom]"')


def visdom_static_dir() -> Path:
    """visdom's static/ folder, where its server looks for these files."""
    spec = importlib.util.find_spec("visdom")
    if spec is None or spec.origin is None:
        raise UserError(f"visdom is not installed: {VISDOM_INSTALL} (its build needs setuptools<81; in a checkout, "
                        "make install does it)")
    return Path(spec.origin).parent / "static"


def missing_assets(static_dir: Path) -> list[Asset]:
    return [a for a in ASSETS if not (static_dir / a.destination).is_file()
            or (static_dir / a.destination).stat().st_size == 0]


def install_assets(static_dir: Path | None = None, npm: str = "npm") -> list[str]:
    """Fetch every missing asset with `npm pack`, place it, and check it. Returns what was installed."""
    static_dir = static_dir or visdom_static_dir()
    todo = missing_assets(static_dir)
    if not todo:
        return []
    npm_path = shutil.which(npm)
    if npm_path is None:
        raise UserError(f"Visdom's front-end files are missing from {static_dir} and npm is not installed: install "
                        "Node.js and npm (e.g. apt-get install npm), then run `cyclegan-culture visdom "
                        "--install_assets`")
    installed = []
    by_package: dict[str, list[Asset]] = {}
    for asset in todo:
        by_package.setdefault(asset.package, []).append(asset)
    with tempfile.TemporaryDirectory() as tmp:
        for package, assets in by_package.items():
            tarball = _npm_pack(npm_path, package, Path(tmp))
            with tarfile.open(tarball) as tar:
                for asset in assets:
                    try:
                        member = tar.extractfile(f"package/{asset.member}")
                    except KeyError:
                        member = None
                    if member is None:
                        raise UserError(f"npm package {package} has no file {asset.member}; "
                                        "the registry's copy differs from what visdom expects")
                    target = static_dir / asset.destination
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(member.read())
                    installed.append(asset.destination)
    still_missing = missing_assets(static_dir)
    if still_missing:
        raise UserError(f"after installing, still missing in {static_dir}: "
                        + ", ".join(a.destination for a in still_missing))
    _mark_built(static_dir)
    return installed


def _npm_pack(npm_path: str, package: str, dest: Path) -> Path:
    try:
        proc = subprocess.run([npm_path, "pack", package, "--pack-destination", str(dest), "--silent"],
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise UserError(f"npm pack {package} timed out; check access to the npm registry") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"npm pack {package} failed ({last}); check access to the npm registry")
    name = proc.stdout.strip().splitlines()[-1]
    return dest / name


def _mark_built(static_dir: Path) -> None:
    """visdom's own downloader skips files that exist once static/version.built names its version."""
    import visdom

    (static_dir / "version.built").write_text(visdom.__version__)


def ensure_assets(npm: str = "npm") -> Path:
    """The static folder, with every asset present (installing the missing ones from npm)."""
    static_dir = visdom_static_dir()
    if missing_assets(static_dir):
        install_assets(static_dir, npm)
    return static_dir
