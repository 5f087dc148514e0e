"""`cyclegan-culture visdom`: a Visdom server that starts offline and listens on 127.0.0.1 by default."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cyclegan_culture.errors import UserError
from cyclegan_culture.viz.visdom_assets import ensure_assets, install_assets, visdom_static_dir

log = logging.getLogger(__name__)
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def install(npm: str = "npm") -> str:
    static_dir = visdom_static_dir()
    installed = install_assets(static_dir, npm)
    return (f"installed {len(installed)} front-end files into {static_dir}" if installed
            else f"all front-end files already present in {static_dir}")


def serve(port: int, host: str = "127.0.0.1", env_path: str | None = None, enable_login: bool = False,
          npm: str = "npm") -> None:
    """Run the server until interrupted. Never downloads: visdom's own downloader is not called."""
    ensure_assets(npm)
    from visdom.server.defaults import DEFAULT_ENV_PATH
    from visdom.server.run_server import start_server

    _allow_user_stylesheet()
    credential = _credential() if enable_login else None
    bind_local = host in LOCAL_HOSTS
    if not bind_local:
        log.warning("listening on all interfaces (--host %s): anyone who can reach port %s sees and can change "
                    "your plots%s", host, port, "" if enable_login else "; add --enable_login")
    env_path = env_path or DEFAULT_ENV_PATH
    Path(env_path).mkdir(parents=True, exist_ok=True)
    print(f"Visdom on http://{host}:{port} (environments in {env_path}); train with --display_id 1 "
          f"--display_port {port}", flush=True)
    # base_url "" (not its default "/"), as visdom's own main() passes it: "/" breaks every route
    start_server(port=port, hostname=host, base_url="", env_path=env_path, bind_local=bind_local,
                 user_credential=credential,
                 print_func=lambda _port: None)


def _allow_user_stylesheet() -> None:
    """visdom 0.2.4's page links its user stylesheet as static_url("../user/style.css"); tornado >= 6.5 refuses
    paths outside the static folder with a 403 for the whole page. Serve that one link unversioned instead (the
    browser resolves /static/../user/style.css to /user/style.css, which visdom's own handler answers)."""
    import tornado.web

    handler = tornado.web.StaticFileHandler
    if getattr(handler, "_cyclegan_culture_patched", False):
        return
    original = handler.make_static_url.__func__

    def make_static_url(cls, settings, path, include_version=True):
        if path.startswith("../"):
            return settings.get("static_url_prefix", "/static/") + path
        return original(cls, settings, path, include_version)

    handler.make_static_url = classmethod(make_static_url)
    handler._cyclegan_culture_patched = True


def _credential() -> dict:
    """Visdom's login from the environment, with a random cookie secret created on first use."""
    import secrets

    from visdom.server.defaults import DEFAULT_ENV_PATH
    from visdom.utils.server_utils import hash_password, set_cookie

    username, password = os.environ.get("VISDOM_USERNAME"), os.environ.get("VISDOM_PASSWORD")
    if not (username and password):
        raise UserError("--enable_login: set VISDOM_USERNAME and VISDOM_PASSWORD in the environment first")
    if not os.path.isfile(DEFAULT_ENV_PATH + "COOKIE_SECRET"):
        Path(DEFAULT_ENV_PATH).mkdir(parents=True, exist_ok=True)
        set_cookie(os.environ.get("VISDOM_COOKIE") or secrets.token_hex(32))
    return {"username": username, "password": hash_password(hash_password(password))}
