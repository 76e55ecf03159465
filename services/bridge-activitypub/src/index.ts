/**
 * @libertaria/bridge-activitypub (in progress): the building blocks of the
 * ActivityPub bridge on Fedify. The bridge itself (actors, inbox, outbox, the
 * Bridge interface) is not written yet. Loading it fills what Fedify 2.3.6
 * needs from Node 20 (fedify-runtime.ts).
 */
import './fedify-runtime.js';

export { fedifyRuntimeReady } from './fedify-runtime.js';
