"""The web console: server-rendered pages (Jinja2) with a little JavaScript that polls the JSON API
and draws charts with the vendored uPlot (static/vendor; no network at run time).

/ jobs with live progress, /jobs/{id} one job (progress with reused pairs, pairs/s over time, chunks,
errors, holders, query search), /workers the registry, /nights what changed between two jobs,
/try the try-it page, /login when API keys are in force (producer/service/security.py). Every time is shown one way (timefmt)."""

from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from producer.service import nights, timefmt
from producer.service.security import COOKIE, key_matches
from producer.service.security import csrf_token as security_csrf
from producer.service.tenancy import audit, viewer
from producer.waiting import describe_workers, no_worker_runs, with_waiting
from rerankq.logs import get_logger
from rerankq.store.actor import Actor
from rerankq.store.errors import UnknownJob
from rerankq.store.jobs import INTERACTIVE_JOB_NAME
from rerankq.store.keys import env_actor

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)
log = get_logger("rerankq.service")


def eta_seconds(total: int, done: int, rate: float | None) -> float | None:
    return (total - done) / rate if rate and total > done else None


def ticks(message: str) -> Markup:
    """A message's `backticked` commands as <code> (the CLI's wording, written for a terminal)."""
    parts = str(message).split("`")
    return Markup("").join(Markup("<code>{}</code>").format(p) if i % 2 else escape(p) for i, p in enumerate(parts))


def model_name(model: str | None) -> str:
    """A column's model: a hub id whole, a model directory by its last part (its path is in the title)."""
    if not model:
        return "–"
    return model.rstrip("/").rsplit("/", 1)[-1] if model.startswith(("/", ".", "~")) else model


def gib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**30:.1f} GiB"


templates.env.globals["eta_seconds"] = eta_seconds
templates.env.filters["when"] = timefmt.when_on_page  # one `now` per page
templates.env.filters["absolute"] = timefmt.absolute
templates.env.filters["gib"] = gib
templates.env.filters["ticks"] = ticks
templates.env.filters["model_name"] = model_name


def _jobs(request: Request, limit: int = 50) -> list:
    return request.app.state.ledger.list_jobs(limit, exclude_name=INTERACTIVE_JOB_NAME, actor=viewer(request))


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "jobs.html", {"jobs": _jobs(request), "model": request.app.state.settings.model})


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request) -> Response:
    store = request.app.state.ledger
    status = store.status(store.resolve_job(job_id))  # /jobs/b58b as `producer status b58b`
    workers = request.app.state.registry.workers(request.app.state.settings.worker_dead_after)
    return templates.TemplateResponse(request, "job.html", {"job": with_waiting(status, workers)})


@router.get("/workers", response_class=HTMLResponse)
def workers_page(request: Request) -> Response:
    settings = request.app.state.settings
    workers = request.app.state.registry.workers(settings.worker_dead_after)
    return templates.TemplateResponse(
        request,
        "workers.html",
        {"workers": workers, "summary": describe_workers(workers, settings.model), "dead_after": settings.worker_dead_after},
    )


@router.get("/nights", response_class=HTMLResponse)
def nights_page(
    request: Request,
    old: str | None = Query(None, description="last night's job (id or unique prefix)"),
    new: str | None = Query(None, description="tonight's job"),
    top_k: int = Query(10, ge=1, le=1000),
) -> Response:
    """Two finished jobs compared as `producer diff` does; by default the newest finished job and the last
    one of its series before it (`nights.last_two_nights`: last night's job of the same name)."""
    store = request.app.state.ledger
    jobs = _jobs(request, 200)
    finished = [j for j in jobs if j.state in nights.FINISHED]
    report, error = None, None
    if old is None or new is None:
        pair = nights.last_two_nights(jobs)
        if pair is not None:
            old, new = old or pair[0].job_id, new or pair[1].job_id
    if old is not None and new is not None:
        try:  # a key that is not admin compares its own tenant's jobs only
            old, new = store.resolve_job(old, actor=viewer(request)), store.resolve_job(new, actor=viewer(request))
            report = nights.night_report(store, old, new, top_k=top_k)
        except UnknownJob as exc:  # a mistyped or ambiguous prefix: say so on the page, keep the form
            error = exc.args[0] if exc.args else str(exc)
    context = {"report": report, "error": error, "finished": finished, "top_k": top_k, "old": old, "new": new}
    return templates.TemplateResponse(request, "nights.html", context, status_code=404 if error else 200)


@router.get("/try", response_class=HTMLResponse)
def try_page(request: Request) -> Response:
    settings = request.app.state.settings
    workers = request.app.state.registry.workers(settings.worker_dead_after)
    missing = no_worker_runs(settings.model, workers)  # what /v1/rerank answers 503 with
    return templates.TemplateResponse(
        request, "try.html", {"model": settings.model, "alive": missing is None, "workers": missing or describe_workers(workers, settings.model)}
    )


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"error": None})


def _key_actor(request: Request, key: str) -> Actor | None:
    expected = request.app.state.api_key
    if expected and key_matches(key, expected):
        return env_actor(expected)
    return request.app.state.keys.authenticate(key)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, key: str = Form(..., max_length=512)) -> Response:
    """A key for a session: the cookie holds a random token, never the key. Attempts are throttled per
    client address and overall (429 with Retry-After)."""
    client = request.client.host if request.client else "?"
    wait = request.app.state.login_throttle.take(client)
    if wait:
        context = {"error": f"too many sign-in attempts: try again in {wait:.0f} s"}
        return templates.TemplateResponse(request, "login.html", context, status_code=429, headers={"Retry-After": f"{wait:.0f}"})
    if request.app.state.api_key is None and not request.app.state.keys.any_key():
        return RedirectResponse("/", status_code=303)  # no key in force: nothing to sign in to
    actor = _key_actor(request, key)
    if actor is None:
        log.warning("login_refused", client=client)
        return templates.TemplateResponse(request, "login.html", {"error": "wrong key"}, status_code=401)
    token = request.app.state.keys.open_session(actor.key_id, request.app.state.settings.session_seconds)
    request.state.actor = actor
    audit(request, "login", actor.key_id)
    response = RedirectResponse("/", status_code=303)
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    response.set_cookie(
        COOKIE, token, max_age=int(request.app.state.settings.session_seconds), httponly=True, samesite="strict", secure=secure
    )
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("", max_length=128)) -> Response:
    """Ends the session (its form carries the page's CSRF token, so another site cannot sign you out)."""
    token = request.cookies.get(COOKIE)
    if token and hmac.compare_digest(csrf_token.encode(), security_csrf(token).encode()):
        request.app.state.keys.close_session(token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, httponly=True, samesite="strict")
    return response
