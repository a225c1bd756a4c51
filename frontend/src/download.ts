// Save a download while hashing it, so an artifact is checked against its sha256 without first being held whole
// in memory: crypto.subtle has no incremental digest, so @noble/hashes' sha256 takes the body chunk by chunk.
// Where the browser can write to disk as bytes arrive (the File System Access API's showSaveFilePicker), the
// file is written there and kept only if the digest matches (a writable is committed on close, dropped on
// abort); elsewhere the chunks become one Blob, saved through a link, once the digest matches.
import { sha256 } from "@noble/hashes/sha2";
import { bytesToHex } from "@noble/hashes/utils";

/** Where the bytes go: written chunk by chunk, then kept (commit) or thrown away (discard). */
export interface Sink {
  write(chunk: Uint8Array): Promise<void>;
  commit(): Promise<void>;
  discard(): Promise<void>;
}

// Not in TypeScript's DOM library yet (Chromium-only API): the parts used here.
type Writable = { write(data: Uint8Array): Promise<void>; close(): Promise<void>; abort(): Promise<void> };
type SavePicker = (options: { suggestedName: string }) => Promise<{ createWritable(): Promise<Writable> }>;

/** Where to save `name`: asked before the download starts, while the click still counts as the user's
 * gesture (the picker needs one). Null when the user cancels the save dialog. */
export async function openSink(name: string): Promise<Sink | null> {
  const picker = (window as unknown as { showSaveFilePicker?: SavePicker }).showSaveFilePicker;
  if (typeof picker !== "function") return blobSink(name);
  let writable: Writable;
  try {
    writable = await (await picker({ suggestedName: name })).createWritable();
  } catch (e) {
    if ((e as DOMException).name === "AbortError") return null;
    throw e;
  }
  return { write: (c) => writable.write(c), commit: () => writable.close(), discard: () => writable.abort() };
}

function blobSink(name: string): Sink {
  let parts: Uint8Array[] = [];
  return {
    write: async (c) => { parts.push(c); },
    commit: async () => {
      const url = URL.createObjectURL(new Blob(parts as BlobPart[]));
      parts = [];
      const link = document.createElement("a");
      link.href = url;
      link.download = name;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    },
    discard: async () => { parts = []; },
  };
}

export interface Checked { bytes: number; sha256: string; ok: boolean }

/** Stream the response's body into `sink`, hashing as it goes; keep it only if its sha256 is `want`. */
export async function saveChecked(res: Response, sink: Sink, want: string): Promise<Checked> {
  const hash = sha256.create();
  let bytes = 0;
  try {
    const reader = res.body?.getReader();
    while (reader) {
      const { done, value } = await reader.read();
      if (done) break;
      hash.update(value);
      bytes += value.length;
      await sink.write(value);
    }
  } catch (e) {
    await sink.discard();
    throw e;
  }
  const got = bytesToHex(hash.digest());
  await (got === want ? sink.commit() : sink.discard());
  return { bytes, sha256: got, ok: got === want };
}
