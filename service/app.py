"""The tweetbot web service: `uvicorn --factory service.app:create_app`.

    GET  /           {"text": "..."}: one new post, as the original bot answered (temperature, prime, seed)
    POST /generate   several samples with every sampling knob, plus the seeds and the model version
    GET  /stream     the same, one sample, as server-sent events while it is generated
    GET  /app        the web page          GET /schema   OpenAPI          GET /metrics   Prometheus
    GET  /healthz    alive                 GET /readyz   200 once the model can answer, 503 before

Every bound is checked before the model runs, and a bad value is a 400 whose `extra` names the field. A client
past its share (service/fairness.py) gets a 429; a full queue, a model still compiling or a service shutting
down (service/shutdown.py) a 503; both with Retry-After. A client that disconnects takes its samples with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import (
    MethodNotAllowedException,
    NotFoundException,
    ServiceUnavailableException,
    ValidationException,
)
from litestar.exceptions.responses import create_exception_response
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import OpenAPI
from litestar.params import Body
from litestar.response import File, ServerSentEvent, ServerSentEventMessage
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.batching import QueueFull, Stopping
from service.bot import Bot
from service.fairness import TooManyRequests, client_address
from service.observability import JsonFormatter, RequestObserver, observe_unmatched
from service.schemas import (
    MAX_POST_CHARS,
    GenerateRequest,
    GenerateResponse,
    Health,
    MaxLength,
    Post,
    Prime,
    Problem,
    Readiness,
    Seed,
    StreamChunk,
    StreamDone,
    StreamEvent,
    Temperature,
    TopK,
    TopP,
    alphabet_pattern,
    as_query,
)
from service.settings import Settings
from service.shutdown import FLUSH_S, on_termination
from tweetbot.runtime import bundle
from tweetbot.runtime.errors import UserError, exit_on_user_error
from tweetbot.runtime.sample import SampleRequest
from tweetbot.runtime.sampling import TEMPERATURE, TOP_P
from tweetbot.runtime.vocab import Vocab, render

PAGE = Path(__file__).parent / "static" / "index.html"
T = TypeVar("T")

# Query parameters: the types and bounds of the POST body's fields (service/schemas.py).
TemperatureQuery, PrimeQuery, SeedQuery = as_query(Temperature), as_query(Prime), as_query(Seed | None)
TopKQuery, TopPQuery, MaxLengthQuery = as_query(TopK | None), as_query(TopP), as_query(MaxLength)
ReadyBot = NamedDependency[Bot]  # injected by `ready_bot`
ClientAddress = NamedDependency[str]  # injected by `client_of`
# msgspec rejects unknown fields; Litestar does not say so in the schema by itself.
StrictJSONBody = Body(schema_extra={"additionalProperties": False})
# What a generating route may answer instead of text (both with Retry-After).
# No generated examples: Litestar makes them with polyfactory, which the image leaves out (Dockerfile).
REFUSALS = {
    429: ResponseSpec(
        Problem,
        generate_examples=False,
        description="the client asked for more than its share: retry after Retry-After",
    ),
    503: ResponseSpec(
        Problem,
        generate_examples=False,
        description="not ready yet, at capacity or shutting down: retry after Retry-After",
    ),
}


def ready_bot(state: State) -> Bot:
    """The bot, once it can answer; before that every generating route is a 503."""
    bot: Bot = state.bot
    if not bot.ready:
        raise ServiceUnavailableException(
            bot.problem or "the model is still compiling: retry when GET /readyz answers 200",
            headers={"Retry-After": "1"},
        )
    return bot


def client_of(request: Request, state: State) -> str:
    """Who the request comes from: the peer, or the address a trusted proxy forwarded (service/fairness.py)."""
    peer = request.client.host if request.client else "unknown"
    return client_address(peer, request.headers.getall("x-forwarded-for", []), state.trusted_proxies)


class ClientLeft(Exception):
    """The client disconnected before its answer was ready."""


async def unless_the_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """The result of `work`, which is cancelled if the client disconnects first: its samples leave the engine
    (nobody would read them), and they no longer count against anyone's limits."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass  # the (already read) request body

    answer, watcher = asyncio.ensure_future(work), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({answer, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (answer, watcher):
            task.cancel()  # a no-op for the one that finished
        await asyncio.gather(answer, watcher, return_exceptions=True)
    if answer.cancelled():
        raise ClientLeft
    return answer.result()


def client_left(request: Request, error: ClientLeft) -> Response:
    """Nobody reads this answer; the status (nginx's 499) is for the request log and the metrics."""
    return Response(None, status_code=499)


def user_error_is_a_bad_request(request: Request, error: UserError) -> Response:
    """A request the sampler refuses (its own last check) is the client's mistake, never a 500."""
    return Response({"status_code": 400, "detail": str(error)}, status_code=400)


def unavailable(request: Request, error: QueueFull | Stopping) -> Response:
    """Too many samples waiting, or the service stopping: a 503 the client may retry, not an ever longer wait."""
    return Response({"status_code": 503, "detail": str(error)}, status_code=503, headers={"Retry-After": "1"})


def too_many_requests(request: Request, error: TooManyRequests) -> Response:
    """The client asked for more than its share: a 429 that says when to come back."""
    headers = {"Retry-After": str(error.retry_after_s)}
    return Response({"status_code": 429, "detail": str(error)}, status_code=429, headers=headers)


def unmatched_route(request: Request, error: NotFoundException | MethodNotAllowedException) -> Response:
    """The router answers an unknown path (404) or method (405) before any middleware runs, so this answer
    (Litestar's own) is counted and logged here."""
    if "route_handler" not in request.scope:  # the router's answer, not a route's
        observe_unmatched(request.method, error.status_code)
    return create_exception_response(request, error)


def check_prime(bot: Bot, prime: str, source: str) -> None:
    unknown = bot.unknown_chars(prime)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown)
        message = f"characters the model does not know: {shown}; remove or replace them"
        raise ValidationException("Validation failed", extra=[{"key": "prime", "source": source, "message": message}])


@get("/", summary="One new post, as the original bot answered", responses=REFUSALS)
async def new_post(
    request: Request,
    bot: ReadyBot,
    client: ClientAddress,
    temperature: TemperatureQuery = TEMPERATURE,
    prime: PrimeQuery = "",
    seed: SeedQuery = None,
) -> Post:
    check_prime(bot, prime, "query")
    (seed,) = bot.seeds(seed, 1)
    # A post is at most 280 characters as shown, prime included (cut, should the prime alone show longer).
    written = max(MAX_POST_CHARS - len(render(prime)), 1)
    sample = SampleRequest(prime=prime, temperature=temperature, max_length=written, seed=seed)
    (text,) = await unless_the_client_leaves(request, bot.generate([sample], client, limit=MAX_POST_CHARS))
    return Post(text=text)


@post("/generate", status_code=200, summary="Samples with every sampling setting", responses=REFUSALS)
async def generate(
    request: Request, bot: ReadyBot, client: ClientAddress, data: Annotated[GenerateRequest, StrictJSONBody]
) -> GenerateResponse:
    check_prime(bot, data.prime, "body")
    seeds = bot.seeds(data.seed, data.n)
    samples = [
        SampleRequest(
            prime=data.prime,
            temperature=data.temperature,
            top_k=data.top_k or 0,
            top_p=data.top_p,
            max_length=data.max_length,
            seed=seed,
        )
        for seed in seeds
    ]
    texts = await unless_the_client_leaves(request, bot.generate(samples, client))
    return GenerateResponse(samples=texts, seeds=seeds, model_version=bot.version)


@get(
    "/stream",
    summary="One sample as server-sent events",
    # Documented here rather than as the handler's media type, which would also label its 400s as a stream.
    responses={
        200: ResponseSpec(
            StreamEvent,
            generate_examples=False,
            media_type="text/event-stream",
            description='events of {"text": the next characters}, then a `done` event',
        ),
        **REFUSALS,
    },
)
async def stream(
    bot: ReadyBot,
    client: ClientAddress,
    temperature: TemperatureQuery = TEMPERATURE,
    prime: PrimeQuery = "",
    top_k: TopKQuery = None,
    top_p: TopPQuery = TOP_P,
    max_length: MaxLengthQuery = MAX_POST_CHARS,
    seed: SeedQuery = None,
) -> ServerSentEvent:
    check_prime(bot, prime, "query")
    (seed,) = bot.seeds(seed, 1)
    sample = SampleRequest(
        prime=prime, temperature=temperature, top_k=top_k or 0, top_p=top_p, max_length=max_length, seed=seed
    )

    chunks = await bot.stream(sample, client)  # queued now: a refusal (429, 503) comes before the stream starts

    async def events() -> AsyncIterator[ServerSentEventMessage]:
        interrupted = False
        try:
            async for chunk in chunks:
                yield ServerSentEventMessage(data=msgspec.json.encode(StreamChunk(chunk)).decode())
        except Stopping:  # a shutdown cut it: the stream still ends as a stream ends
            interrupted = True
        done = StreamDone(model_version=bot.version, seed=seed, interrupted=interrupted)
        yield ServerSentEventMessage(event="done", data=msgspec.json.encode(done).decode())

    return ServerSentEvent(events())


@get("/healthz", summary="Alive (the process answers)")
async def healthz() -> Health:
    return Health(status="ok")


@get("/readyz", summary="Ready: 200 once the model is loaded and its first program compiled, 503 before")
async def readyz(state: State) -> Response[Readiness]:
    bot: Bot = state.bot
    readiness = Readiness(ready=bot.ready, model_version=bot.version, detail=bot.problem)
    return Response(readiness, status_code=200 if bot.ready else 503)


@get("/metrics", media_type=CONTENT_TYPE_LATEST, summary="Prometheus metrics", sync_to_thread=False)
def metrics() -> bytes:
    return generate_latest()


@get("/app", media_type=MediaType.HTML, include_in_schema=False)
async def page() -> File:
    return File(PAGE, content_disposition_type="inline")


@exit_on_user_error
def settings_from_env() -> Settings:
    """The settings of `uvicorn --factory service.app:create_app`, checked before the server starts: a bad
    variable or a missing bundle is one line on stderr and exit status 2, not a start-up traceback."""
    settings = Settings.from_env()
    bundle.load(settings.bundle)
    return settings


def publish_alphabet(schema: OpenAPI, vocab: Vocab) -> None:
    """Give every `prime` (query parameter or body field) the pattern of the characters the model knows, so the
    schema says what the handler checks (a client, or a fuzzer, can tell a valid prime from the schema)."""
    pattern = alphabet_pattern(vocab)
    for path in (schema.paths or {}).values():
        for operation in filter(None, (path.get, path.post)):
            for parameter in operation.parameters or []:
                if parameter.name == "prime":
                    parameter.schema.pattern = pattern
    schema.components.schemas["GenerateRequest"].properties["prime"].pattern = pattern


def create_app(settings: Settings | None = None) -> Litestar:
    """The application; without `settings`, from the environment (see service/settings.py)."""
    settings = settings or settings_from_env()

    @asynccontextmanager
    async def model_lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.bot = bot = Bot(settings)  # a bad bundle fails start-up here (a BundleError)
        publish_alphabet(app.openapi_schema, bot.vocab)  # before any request can read the schema
        bot.start()
        loop = asyncio.get_running_loop()
        cut_after_s = max(settings.drain_s - FLUSH_S, 0)
        try:
            with on_termination(lambda: loop.call_soon_threadsafe(bot.drain, cut_after_s)):
                yield
        finally:
            await bot.stop()

    return Litestar(
        route_handlers=[new_post, generate, stream, healthz, readyz, metrics, page],
        dependencies={
            "bot": Provide(ready_bot, sync_to_thread=False),
            "client": Provide(client_of, sync_to_thread=False),
        },
        state=State({"trusted_proxies": settings.trusted_proxies}),
        exception_handlers={
            UserError: user_error_is_a_bad_request,
            QueueFull: unavailable,
            Stopping: unavailable,
            TooManyRequests: too_many_requests,
            ClientLeft: client_left,
            NotFoundException: unmatched_route,
            MethodNotAllowedException: unmatched_route,
        },
        lifespan=[model_lifespan],
        middleware=[RequestObserver()],
        cors_config=CORSConfig(allow_origins=list(settings.cors_origins)),
        openapi_config=OpenAPIConfig(
            title="tweetbot",
            version="1",
            description="A character-level model writing posts in the voice of one account.",
            path="/schema",
            render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"]), SwaggerRenderPlugin()],
        ),
        logging_config=LoggingConfig(
            formatters={"standard": {"()": JsonFormatter}},
            root={"level": settings.log_level, "handlers": ["queue_listener"]},
            loggers={
                "tweetbot": {"level": settings.log_level},
                "jax": {"level": "WARNING"},
                # Our request line replaces uvicorn's access line.
                "uvicorn.access": {"level": "WARNING"},
            },
            log_exceptions="always",
            # Client errors and "not ready yet" are answers, not bugs: no traceback for them.
            disable_stack_trace={*range(400, 500), 503},
        ),
    )
