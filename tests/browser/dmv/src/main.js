// Show one slide of a slideserver through dicom-microscopy-viewer, as Slim does it: QIDO-RS for
// the series, WADO-RS series metadata, then a VolumeImageViewer that fetches frames itself.
// The page's query says what to show: ?dicomweb=<root>&series=<SeriesInstanceUID>.
// Progress and errors go to window.dmvState, which the browser test reads.
import * as DICOMMicroscopyViewer from "dicom-microscopy-viewer"
import * as DICOMwebClient from "dicomweb-client"

const state = (window.dmvState = { stage: "starting", error: null, instances: 0 })

async function show() {
  const params = new URLSearchParams(window.location.search)
  const url = params.get("dicomweb") || "/dicomweb"
  const client = new DICOMwebClient.api.DICOMwebClient({ url })

  state.stage = "searching"
  const found = await client.searchForSeries({
    queryParams: { SeriesInstanceUID: params.get("series") },
  })
  if (found.length !== 1) throw new Error(`QIDO-RS found ${found.length} series`)
  const studyInstanceUID = found[0]["0020000D"].Value[0]
  const seriesInstanceUID = found[0]["0020000E"].Value[0]

  state.stage = "metadata"
  const metadata = await client.retrieveSeriesMetadata({ studyInstanceUID, seriesInstanceUID })
  const images = metadata
    .map((m) => new DICOMMicroscopyViewer.metadata.VLWholeSlideMicroscopyImage({ metadata: m }))
    .filter((image) => ["VOLUME", "THUMBNAIL"].includes(image.ImageType[2]))
  state.instances = images.length

  state.stage = "rendering"
  const viewer = new DICOMMicroscopyViewer.viewer.VolumeImageViewer({ client, metadata: images })
  viewer.render({ container: "viewport" })
  window.dmvViewer = viewer
  state.stage = "rendered"
}

show().catch((err) => {
  state.stage = "failed"
  state.error = String(err && err.stack ? err.stack : err)
  console.error("dmv test page:", err)
})
