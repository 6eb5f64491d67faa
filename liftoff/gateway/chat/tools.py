"""Tool calling on `/v1/chat/completions`: the request's `tools`, `tool_choice` and `parallel_tool_calls`, the
history's assistant `tool_calls` and `tool` messages, and the answer's `message.tool_calls` (whole or streamed).

The reader renders the tools through its model's chat template (they travel in the work item's `tools`), and
publishes the format its model writes calls in (`ReaderInfo.tool_call_parser`, from its `tool_call_parser` setting
or its template's markers); the gateway parses the answer with that format (`liftoff.core.tool_calls`).

- `none`: the tools are not offered to the template and nothing is parsed.
- `auto` (the default with tools): the model is free; what it wrote is parsed, and text without a valid call is
  plain content.
- `required`, or a named function: the output is constrained by a grammar of the format's call syntax whose JSON is
  `{name: one of the tools, arguments: that tool's parameters schema}` (only the named one for a named choice), one
  call, or several when `parallel_tool_calls` (default true). So the call always parses and validates. This works
  on any generation model: a forced call is a grammar, not a template feature. When the model's chat template
  shows no tool-call format, the call is written in `DEFAULT_PARSER`'s (`<tool_call>{"name": ..., "arguments":
  ...}</tool_call>`) and the tools are described to the model in a system message (`tool_prompt`), since its
  template would not show them; `auto` still needs a format the model knows (its template's, or the reader's
  `tool_call_parser` setting).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import StrictBool, StrictStr, field_validator

from liftoff.core.grammar_check import constraint_error
from liftoff.core.tool_calls import ToolCall, ToolStream, parse, tool_grammar
from liftoff.gateway.chat.errors import OpenAIError, invalid
from liftoff.gateway.rules import Strict

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_PARSER = "hermes"  # the call format of forced calls on a model whose template shows none


class FunctionDef(Strict):
    name: StrictStr
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"a function name is 1 to 64 letters, digits, '_' or '-'; given {v!r}")
        return v


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDef


class FunctionName(Strict):
    name: StrictStr


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class CalledFunction(Strict):
    name: StrictStr
    arguments: StrictStr  # JSON text, as OpenAI sends it


class HistoryToolCall(Strict):
    """An assistant message's `tool_calls` entry in the history."""

    id: StrictStr
    type: Literal["function"] = "function"
    function: CalledFunction

    def template_view(self, where: str) -> dict[str, Any]:
        """The call for the chat template: arguments as an object (templates write them with `tojson`)."""
        try:
            arguments = json.loads(self.function.arguments)
        except ValueError:
            raise invalid(f"{where}.function.arguments must be JSON text; given {self.function.arguments[:200]!r}",
                          f"{where}.function.arguments") from None
        return {"id": self.id, "type": "function", "function": {"name": self.function.name, "arguments": arguments}}


def check_tools(tools: list[Tool] | None, choice: ToolChoice | None) -> None:
    """Tool names unique; a `required` or named choice has tools; a named choice names one of them (400)."""
    names = [t.function.name for t in tools or []]
    if len(set(names)) != len(names):
        raise invalid(f"tools: function names must be unique; given {names}", "tools")
    if (choice == "required" or isinstance(choice, NamedToolChoice)) and not names:
        raise invalid("tool_choice: a required or named tool choice needs tools", "tool_choice")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise invalid(f"tool_choice names the function {choice.function.name!r}, which is not among the tools "
                      f"{names}", "tool_choice.function.name")


@dataclass
class ToolPlan:
    """How one chat request uses its tools: the format to parse, the tools for the template, the grammar."""

    parser: str
    tools: list[dict[str, Any]]  # OpenAI's shape, for the template
    names: set[str]
    parallel: bool
    params: dict[str, Any] = field(default_factory=dict)  # lark_grammar when the choice constrains the output
    prompted: bool = False  # the template shows no tools: they are described in a system message (`tool_prompt`)

    def chat(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages the template renders: with the tools' description when it would not show them."""
        if not self.prompted:
            return messages
        prompt = tool_prompt(self.tools)
        first = messages[0] if messages else None
        if first is not None and first.get("role") == "system" and isinstance(first.get("content"), str):
            return [{**first, "content": f"{first['content']}\n\n{prompt}"}, *messages[1:]]
        return [{"role": "system", "content": prompt}, *messages]

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        content, calls = parse(self.parser, text, self.names)
        return content, calls if self.parallel else calls[:1]

    def message(self, text: str) -> tuple[dict[str, Any], bool]:
        """The answer's message, and whether it holds calls."""
        content, calls = self.parse(text)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [c.openai() for c in calls]
        return message, bool(calls)

    def stream(self) -> ToolStream:
        """A streamed choice's calls: each one's first delta (index, id, type, name, empty arguments) as soon as its
        name is read, then its arguments as the model writes them."""
        return ToolStream(self.parser, self.names, None if self.parallel else 1)


def tool_plan(tools: list[Tool] | None, choice: ToolChoice | None, parallel: bool | None, parser: str | None,
              constrained_by: str | None) -> ToolPlan | None:
    """The plan for a request's tools (None: no tools, or `tool_choice: none`). `parser`: the format the group's
    readers publish (None: their model has none, a 400); `constrained_by`: the structured-output parameter the
    request also sets, which a required or named choice cannot be combined with (422)."""
    if not tools or choice == "none":
        return None
    forced = choice == "required" or isinstance(choice, NamedToolChoice)
    if parser is None and not forced:
        raise invalid("tools: this model's readers recognise no tool-call format in its chat template, so it can't "
                      "choose to call a tool (tool_choice auto); a required or named tool_choice works on any model, "
                      "or set the reader's tool_call_parser (hermes, llama3_json, mistral)", "tools")
    wanted = [t for t in tools if not isinstance(choice, NamedToolChoice) or t.function.name == choice.function.name]
    single = isinstance(choice, NamedToolChoice)
    plan = ToolPlan(parser or DEFAULT_PARSER, [t.model_dump(exclude_none=True) for t in tools],
                    {t.function.name for t in wanted}, parallel is not False and not single, prompted=parser is None)
    parser = plan.parser
    if forced:
        if constrained_by:
            raise OpenAIError(422, f"tool_choice {'required' if choice == 'required' else 'naming a function'} "
                              f"constrains the output; it cannot be combined with {constrained_by}", "tool_choice")
        specs = [{"name": t.function.name, "parameters": t.function.parameters} for t in wanted]
        grammar = tool_grammar(parser, specs, plan.parallel)
        problem = constraint_error(None, None, lark_grammar=grammar)
        if problem:
            raise invalid(f"tools: a function's parameters cannot be used to constrain its calls: "
                          f"{problem.removeprefix('lark_grammar cannot be used for constrained decoding: ')}"[:600],
                          "tools")
        plan.params = {"lark_grammar": grammar}
    return plan


def tool_prompt(tools: list[dict[str, Any]]) -> str:
    """The tools described for a model whose template would not show them, in the call format they are forced in."""
    lines = ["You can call functions. To call one, answer with",
             '<tool_call>{"name": <the function\'s name>, "arguments": <its arguments, a JSON object>}</tool_call>',
             "The functions:"]
    for tool in tools:
        function = tool["function"]
        described = f"- {function['name']}"
        if function.get("description"):
            described += f": {function['description']}"
        lines.append(described)
        lines.append(f"  parameters (JSON schema): {json.dumps(function.get('parameters') or {'type': 'object'})}")
    return "\n".join(lines)
