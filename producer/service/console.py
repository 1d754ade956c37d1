"""The web console: server-rendered pages (Jinja2) with a little JavaScript that polls the JSON API.

/ jobs with live progress, /jobs/{id} one job (chunks by state, errors, holders, query search),
/try the try-it page (like the seeds' Gradio page), /login when RERANKQ_API_KEY is set."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from rerankq.store.jobs import INTERACTIVE_JOB_NAME
from producer.service.security import COOKIE, key_matches

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)


def eta_seconds(total: int, done: int, rate: float | None) -> float | None:
    return (total - done) / rate if rate and total > done else None


templates.env.globals["eta_seconds"] = eta_seconds


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request) -> Response:
    jobs = request.app.state.ledger.list_jobs(50, exclude_name=INTERACTIVE_JOB_NAME)
    return templates.TemplateResponse(request, "jobs.html", {"jobs": jobs, "model": request.app.state.settings.model})


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request) -> Response:
    status = request.app.state.ledger.status(job_id)
    return templates.TemplateResponse(request, "job.html", {"job": status})


@router.get("/try", response_class=HTMLResponse)
def try_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "try.html", {"model": request.app.state.settings.model})


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"error": None})


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, key: str = Form(...)) -> Response:
    expected = request.app.state.api_key
    if expected is None:
        return RedirectResponse("/", status_code=303)
    if not key_matches(key, expected):
        return templates.TemplateResponse(request, "login.html", {"error": "wrong key"}, status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response
