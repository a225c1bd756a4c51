// Small shared hooks: the hash route, loading data with its error in words, and live refreshes.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import type { JobEvent } from "./api";
import { subscribe } from "./events";

export function useHash(): string {
  const [hash, setHash] = useState(location.hash || "#/jobs");
  useEffect(() => {
    const on = () => setHash(location.hash || "#/jobs");
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

export interface Loaded<T> { data: T | null; error: string | null; loading: boolean; reload: () => Promise<void> }

/** Load `fn()` now and whenever `deps` change; `reload` fetches again keeping the old data on screen. */
export function useLoad<T>(fn: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const seq = useRef(0);
  const reload = useCallback(async () => {
    const mine = ++seq.current;
    setLoading(true);
    try {
      const value = await fn();
      if (mine === seq.current) { setData(value); setError(null); }
    } catch (e) {
      if (mine === seq.current) setError((e as Error).message);
    } finally {
      if (mine === seq.current) setLoading(false);
    }
  }, deps);
  useEffect(() => { setData(null); reload(); }, [reload]);
  return { data, error, loading, reload };
}

/** Call `fn` (at most every `wait` ms) when a live event passes `filter`. */
export function useLive(filter: (ev: JobEvent) => boolean, fn: (ev: JobEvent) => void, deps: unknown[], wait = 400) {
  useEffect(() => {
    let timer: number | undefined;
    let last: JobEvent | null = null;
    const off = subscribe((ev) => {
      if (!filter(ev)) return;
      last = ev;
      if (timer === undefined) timer = window.setTimeout(() => { timer = undefined; if (last) fn(last); }, wait);
    });
    return () => { off(); if (timer !== undefined) clearTimeout(timer); };
  }, deps);
}

/** Re-render every `ms` (for ETAs and elapsed times). */
export function useTick(ms = 1000) {
  const [, set] = useState(0);
  useEffect(() => {
    const t = setInterval(() => set((n) => n + 1), ms);
    return () => clearInterval(t);
  }, [ms]);
}
