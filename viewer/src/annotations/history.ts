// Undo and redo of saved changes. Each entry knows how to apply and revert itself against the
// server (create <-> delete, geometry before <-> after); a re-created annotation gets a new id,
// which later entries that mention the old one follow through ``renamed``.
import type { AnnotationStore } from "./store";
import type { Feature } from "./model";

export type Change =
  | { kind: "create"; store: AnnotationStore; id: string; feature: Feature }
  | { kind: "update"; store: AnnotationStore; id: string; before: Feature; after: Feature }
  | { kind: "delete"; store: AnnotationStore; id: string; feature: Feature };

function strip(f: Feature): Feature {
  const { id: _id, version: _v, measurements: _m, author: _a, measurements_unavailable: _u, created: _c, updated: _d, ...props } = f.properties;
  return { type: "Feature", geometry: f.geometry, properties: props };
}

export class History {
  private readonly done: Change[] = [];
  private readonly undone: Change[] = [];
  private readonly renamed = new Map<string, string>();
  busy = false;

  constructor(private readonly onChange: () => void) {}

  record(c: Change): void {
    this.done.push(c);
    this.undone.length = 0;
    if (this.done.length > 200) this.done.shift();
    this.onChange();
  }

  get canUndo(): boolean {
    return this.done.length > 0 && !this.busy;
  }

  get canRedo(): boolean {
    return this.undone.length > 0 && !this.busy;
  }

  private idOf(id: string): string {
    let cur = id;
    while (this.renamed.has(cur)) cur = this.renamed.get(cur)!;
    return cur;
  }

  async undo(): Promise<void> {
    const c = this.done.pop();
    if (!c) return;
    await this.run(c, true);
    this.undone.push(c);
  }

  async redo(): Promise<void> {
    const c = this.undone.pop();
    if (!c) return;
    await this.run(c, false);
    this.done.push(c);
  }

  private async run(c: Change, revert: boolean): Promise<void> {
    this.busy = true;
    this.onChange();
    try {
      const id = this.idOf(c.id);
      const recreate = async (f: Feature) => {
        const a = await c.store.create(strip(f));
        this.renamed.set(id, a.id);
      };
      if (c.kind === "create") await (revert ? c.store.remove(id) : recreate(c.feature));
      else if (c.kind === "delete") await (revert ? recreate(c.feature) : c.store.remove(id));
      else await c.store.update(id, strip(revert ? c.before : c.after));
    } finally {
      this.busy = false;
      this.onChange();
    }
  }
}

export { strip as writableFeature };
