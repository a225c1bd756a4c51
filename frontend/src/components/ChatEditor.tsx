// The playground's chat: an editable list of messages with their roles (system, user, assistant). Both models
// answer the same messages; "Continue the chat with this answer" appends one of the answers.
import type { Message, Role } from "../inference";

const ROLES: Role[] = ["system", "user", "assistant"];

export function ChatEditor({ messages, set, onSubmitKey }: {
  messages: Message[]; set: (m: Message[]) => void; onSubmitKey: (e: KeyboardEvent) => void;
}) {
  const patch = (i: number, p: Partial<Message>) => set(messages.map((m, k) => (k === i ? { ...m, ...p } : m)));
  const next: Role = messages.length && messages[messages.length - 1].role === "user" ? "assistant" : "user";
  return (
    <fieldset class="chat">
      <legend>Chat</legend>
      <ol class="messages" aria-label="Chat messages">
        {messages.map((m, i) => (
          <li class={`msg msg-${m.role}`} key={i}>
            <select aria-label={`Role of message ${i + 1}`} value={m.role}
                    onChange={(e) => patch(i, { role: (e.target as HTMLSelectElement).value as Role })}>
              {ROLES.map((r) => <option value={r}>{r}</option>)}
            </select>
            <textarea aria-label={`Message ${i + 1}`} rows={Math.min(8, Math.max(2, m.content.split("\n").length))} value={m.content}
                      placeholder={m.role === "system" ? "Instructions for the model" : m.role === "user" ? "Your message" : "The assistant's reply"}
                      onInput={(e) => patch(i, { content: (e.target as HTMLTextAreaElement).value })} onKeyDown={onSubmitKey} />
            <button type="button" class="link" aria-label={`Remove message ${i + 1}`} disabled={messages.length === 1}
                    onClick={() => set(messages.filter((_, k) => k !== i))}>Remove</button>
          </li>
        ))}
      </ol>
      <button type="button" class="link" onClick={() => set([...messages, { role: next, content: "" }])}>Add a message</button>
    </fieldset>
  );
}
