"""Try a model: OpenAI's chat and completions on a fine-tuned model (or a base alias), and label probabilities
from a classification job. The API only resolves the name, checks the request and forwards it to a live
inference process (api/upstream.py); OpenAI's objects are made in api/openai_shapes.py."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from api import upstream
from api.deps import Credentials, JobDep, SessionDep, owner_of
from api.errors import APIError
from api.openai_shapes import (
    DEFAULT_MAX_TOKENS_CHAT,
    DEFAULT_MAX_TOKENS_COMPLETION,
    ChunkMaker,
    chat_completion,
    include_usage,
    sampling_of,
    sse_from_ndjson,
    text_completion,
)
from api.routes.common import errors
from api.schemas import (
    ChatCompletionPublic,
    ChatCompletionRequest,
    CompletionPublic,
    CompletionRequest,
    ListPage,
    Prediction,
    PredictRequest,
    SamplingRequest,
)
from service import finetuned, inference_routing
from service.inference_routing import Endpoint
from service.models import Job

router = APIRouter(tags=["inference"])
GENERATE, PREDICT = "/internal/generate", "/internal/predict"
ERRORS = errors(400, 404, 409, 413, 502)  # 400: a body that is not JSON; 502: the inference process failed
STREAMED = {200: {"content": {"text/event-stream": {}},
                  "description": "the object, or with stream: true its chunks as Server-Sent Events ending "
                                 "`data: [DONE]`"}}


def _route(session: Session, target: finetuned.Target) -> tuple[list[Endpoint], str]:
    """The live inference processes to try, in order, and the token they accept; the session's connection
    goes back to the pool now, not when a long answer ends."""
    endpoints = inference_routing.live_endpoints(session, target.base)
    session.close()
    return endpoints, inference_routing.internal_token()


def _generation_target(session: Session, creds: Any, model: str) -> tuple[finetuned.Target, list[Endpoint], str]:
    """The caller's model (404 unknown or another owner's, 409 not succeeded, 422 one that only classifies)."""
    owner = owner_of(session, creds)
    target = finetuned.resolve(session, owner.id, model)
    finetuned.check_generates(target)
    return (target, *_route(session, target))


async def _generate(request: Request, session: Session, creds: Any, body: SamplingRequest, chat: bool,
                    inputs: dict[str, Any]) -> Any:
    """Forward one generation; a stream comes back as OpenAI's SSE chunks, a whole answer as its object."""
    sampling = sampling_of(body, DEFAULT_MAX_TOKENS_CHAT if chat else DEFAULT_MAX_TOKENS_COMPLETION)
    target, endpoints, token = await to_thread.run_sync(_generation_target, session, creds, body.model)
    payload = {"target": target.wire(), "prompt": None, "messages": None, **inputs, "sampling": sampling,
               "stream": bool(body.stream)}
    if body.stream:
        opened = await upstream.open_post(endpoints, GENERATE, payload, token)
        return upstream.event_stream(opened, sse_from_ndjson(opened.lines(), ChunkMaker(chat, body.model,
                                                                                        include_usage(body))))
    result = await upstream.post_json(request, endpoints, GENERATE, payload, token)
    return chat_completion(result, body.model) if chat else text_completion(result, body.model)


@router.post("/v1/chat/completions", response_model=ChatCompletionPublic, responses={**ERRORS, **STREAMED})
async def chat_completions(body: ChatCompletionRequest, request: Request, session: SessionDep,
                           creds: Credentials) -> Any:
    """OpenAI's chat completion on a fine-tuned model (its job's ``fine_tuned_model``) or a base model alias."""
    return await _generate(request, session, creds, body, True, {"messages": [m.flat() for m in body.messages]})


@router.post("/v1/completions", response_model=CompletionPublic, responses={**ERRORS, **STREAMED})
async def completions(body: CompletionRequest, request: Request, session: SessionDep, creds: Credentials) -> Any:
    """OpenAI's (legacy) text completion: the prompt continued as it is, no chat template."""
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    return await _generate(request, session, creds, body, False, {"prompt": prompt})


def _classification_target(session: Session, job: Job) -> tuple[finetuned.Target, list[Endpoint], str]:
    target = finetuned.target_of_job(session, job)  # 409 until it succeeded
    finetuned.check_classifies(target)
    return (target, *_route(session, target))


@router.post("/v1/jobs/{job_id}/predict", response_model=ListPage[Prediction], responses=ERRORS)
async def predict(body: PredictRequest, request: Request, session: SessionDep, job: JobDep) -> ListPage[Prediction]:
    """A classification job's label probabilities for each text, in order."""
    target, endpoints, token = await to_thread.run_sync(_classification_target, session, job)
    result = await upstream.post_json(request, endpoints, PREDICT, {"target": target.wire(), "texts": body.texts},
                                      token)
    rows = result.get("data")
    try:
        if not isinstance(rows, list) or len(rows) != len(body.texts):
            raise ValueError("one prediction per text expected")
        data = [Prediction.model_validate(r) for r in rows]
    except ValueError:  # a pydantic ValidationError too
        raise APIError(502, "the inference process sent a malformed answer", code="upstream_error") from None
    return ListPage[Prediction](data=data, has_more=False, last_id=None)
