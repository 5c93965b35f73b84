/**
 * The route to a node: the chain of edges from the walk's root, kept as parent links so that
 * routes share their prefixes (a node's route costs one small object, however deep it is).
 */
import type { EdgeType } from './schema.ts';
import { type Node, nodeKey } from './nodes.ts';

export interface Route {
  /** The edge that led here; null at the root. */
  edge: EdgeType | null;
  node: Node;
  /** The repo path the edge carried (`collection/rkey`), where one applies. */
  path: string | undefined;
  parent: Route | null;
}

/** One hop of a route as findings store it (JSON). */
export interface RouteHop {
  edge?: string;
  node: string;
  path?: string;
}

export function rootRoute(node: Node): Route {
  return { edge: null, node, path: undefined, parent: null };
}

/** The hops from the root to `route`'s node, root first. */
export function routeHops(route: Route): RouteHop[] {
  const hops: RouteHop[] = [];
  for (let r: Route | null = route; r; r = r.parent) {
    const hop: RouteHop = { node: `${r.node.type}:${nodeKey(r.node)}` };
    if (r.edge) hop.edge = r.edge;
    if (r.path !== undefined) hop.path = r.path;
    hops.push(hop);
  }
  return hops.reverse();
}

/** `Repo:did -RepoToCommit-> Commit:bafy… -CommitToMstNode-> …` */
export function formatRoute(route: Route): string {
  return routeHops(route)
    .map((h) => (h.edge ? ` -${h.edge}${h.path !== undefined ? `(${h.path})` : ''}-> ${h.node}` : h.node))
    .join('');
}
